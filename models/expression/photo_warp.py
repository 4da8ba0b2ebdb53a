"""A photo's face moved to another expression: the face-motion model gives the landmarks' new places, and the
photo is warped piecewise-affinely over the warp mesh (MediaPipe's canonical triangles, eye fans from the iris
centres, the mouth opening, two border rings); where the lips part more than in the photo, the mouth is filled
with a cavity, teeth and tongue coloured from the photo's own lips and skin. Pixels outside the mesh are the
photo's, bit for bit.

The rasteriser is a deliberately plain rule (pixel centres at +0.5; a pixel belongs to a triangle when its centre
is inside or on an edge; triangles painted in order, the last one wins) so the browser (``js/face_warp.js``) runs
the identical arithmetic on a canvas; a test compares the two. numpy only: no OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batch import BLENDSHAPE_INDEX
from .face_motion import FaceMotion, PosedFace, WarpTopology, target_landmarks

OPEN_MOUTH_WARNING = 0.5  # a photo reading more jawOpen or smile than this is said to warp less well
STILL_PX = 0.02  # a triangle none of whose corners moved more than this (pixels) is left as the photo shows it
LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class WarpResult:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool: the pixels the warp wrote; every other pixel is the photo's
    landmarks: np.ndarray  # (478, 3) normalised: where the face's landmarks were moved to


def warp_photo(motion: FaceMotion, rgb: np.ndarray, face: PosedFace, target, intensity: float = 1.0,
               turn=(0.0, 0.0, 0.0)) -> WarpResult:
    """The photo (RGB uint8) with its face moved towards ``target`` (52 blendshapes as the estimator reads them) by
    ``intensity`` and its head turned by ``turn`` degrees (yaw, pitch, roll)."""
    moved = target_landmarks(motion, face, target, intensity, turn)
    source, destination, depth = vertex_pixels(motion.topology, face.landmarks, moved, face.width, face.height)
    image, mask = warp_image(rgb, motion.topology, source, destination, depth)
    return WarpResult(image, mask, moved)


def vertex_pixels(topology: WarpTopology, source_landmarks, moved_landmarks, width: int, height: int):
    """Source and destination pixel positions of every warp vertex (the landmarks, then the two border rings) and
    each one's destination depth (larger = nearer the camera; the rings lie behind everything)."""
    size = np.array([width, height], dtype=np.float64)
    source = np.asarray(source_landmarks, dtype=np.float64)[:, :2] * size
    destination = np.asarray(moved_landmarks, dtype=np.float64)[:, :2] * size
    oval = list(topology.oval)
    centre = np.array([0.0, 0.0])
    for o in oval:  # summed point by point, as the browser does
        centre += source[o]
    centre /= len(oval)
    rings_source, rings_destination = [], []
    for factor, follow in zip(topology.ring_factors, topology.ring_follow):
        ring = centre + (source[oval] - centre) * factor
        rings_source.append(ring)
        rings_destination.append(ring + follow * (destination[oval] - source[oval]))
    depth = np.concatenate([-np.asarray(moved_landmarks, dtype=np.float64)[:, 2] * width, np.full(2 * len(oval), -1e9)])
    return np.concatenate([source] + rings_source), np.concatenate([destination] + rings_destination), depth


def paint_order(topology: WarpTopology, depth: np.ndarray) -> np.ndarray:
    """Every triangle in painting order: the rings, the mouth, the eyes, then the skin far to near (a stable sort
    on the mean destination depth), so where a turned head folds the mesh the nearer skin wins."""
    skin = topology.triangles["skin"]
    key = (depth[skin[:, 0]] + depth[skin[:, 1]] + depth[skin[:, 2]]) / 3
    return np.concatenate([topology.triangles["ring"], topology.triangles["mouth"], topology.triangles["eye"],
                           skin[np.argsort(key, kind="stable")]])


def raster_spans(points: np.ndarray, triangles: np.ndarray, width: int, height: int):
    """The pixel spans each triangle covers: (triangle, row, first column, last column) arrays. The centre of pixel
    (col, row) is (col + .5, row + .5); it is covered when every edge function is >= 0."""
    a, b, c = points[triangles[:, 0]], points[triangles[:, 1]], points[triangles[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    top = np.minimum(np.minimum(a[:, 1], b[:, 1]), c[:, 1])
    bottom = np.maximum(np.maximum(a[:, 1], b[:, 1]), c[:, 1])
    first = np.maximum(np.ceil(top - 0.5), 0).astype(np.int64)
    last = np.minimum(np.floor(bottom - 0.5), height - 1).astype(np.int64)
    rows_per = np.where(area != 0, np.maximum(last - first + 1, 0), 0)
    triangle = np.repeat(np.arange(len(triangles)), rows_per)
    row = np.repeat(first, rows_per) + (np.arange(rows_per.sum()) - np.repeat(np.cumsum(rows_per) - rows_per, rows_per))
    centre_y = row + 0.5
    sign = np.sign(area)[triangle]
    low, high = np.full(len(triangle), -np.inf), np.full(len(triangle), np.inf)
    for p, q in ((a, b), (b, c), (c, a)):
        ax, ay, bx, by = p[triangle, 0], p[triangle, 1], q[triangle, 0], q[triangle, 1]
        slope = -sign * (by - ay)  # sign * edge(x) = slope * x + offset
        offset = sign * ((bx - ax) * (centre_y - ay) + (by - ay) * ax)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing = -offset / slope
        low = np.where(slope > 0, np.maximum(low, crossing), low)
        high = np.where(slope < 0, np.minimum(high, crossing), high)
        high = np.where((slope == 0) & (offset < 0), -np.inf, high)
    col0 = np.maximum(np.ceil(low - 0.5), 0)
    col1 = np.minimum(np.floor(high - 0.5), width - 1)
    keep = col1 >= col0
    return triangle[keep], row[keep], col0[keep].astype(np.int64), col1[keep].astype(np.int64)


def destination_to_source(destination: np.ndarray, source: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T, 2, 3): per triangle the affine map from destination pixels to source pixels (written out, as in JS)."""
    x0, y0 = destination[triangles[:, 0], 0], destination[triangles[:, 0], 1]
    x1, y1 = destination[triangles[:, 1], 0], destination[triangles[:, 1], 1]
    x2, y2 = destination[triangles[:, 2], 0], destination[triangles[:, 2], 1]
    det = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    det = np.where(det == 0, 1e-300, det)
    maps = np.empty((len(triangles), 2, 3))
    for d in range(2):
        s0, s1, s2 = source[triangles[:, 0], d], source[triangles[:, 1], d], source[triangles[:, 2], d]
        e1, e2 = s1 - s0, s2 - s0
        ax = (e1 * (y2 - y0) - e2 * (y1 - y0)) / det
        ay = (-e1 * (x2 - x0) + e2 * (x1 - x0)) / det
        maps[:, d, 0], maps[:, d, 1], maps[:, d, 2] = ax, ay, s0 - ax * x0 - ay * y0
    return maps


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, C) samples of a float (H, W, C) image at pixel coordinates (centre of pixel i at i + .5); edges clamp."""
    height, width = image.shape[:2]
    flat = image.reshape(height * width, -1)
    x, y = x - 0.5, y - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xa, xb = np.clip(x0, 0, width - 1), np.clip(x0 + 1, 0, width - 1)
    ya, yb = np.clip(y0, 0, height - 1) * width, np.clip(y0 + 1, 0, height - 1) * width
    top = flat.take(ya + xa, axis=0) * (1 - fx) + flat.take(ya + xb, axis=0) * fx
    bottom = flat.take(yb + xa, axis=0) * (1 - fx) + flat.take(yb + xb, axis=0) * fx
    return top * (1 - fy) + bottom * fy


def closed_gap(mouth_width: float) -> float:
    """Below this lip gap (pixels) the lips meet: drawn as the dark line between them."""
    return max(2.0, 0.05 * mouth_width)


def mouth_colour(u, v, gap, mouth_width: float, lip: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """The mouth's inside at (u along the mouth 0..1, v from the upper lip 0 to the lower 1) where the lips are
    ``gap`` pixels apart: a dark cavity, upper teeth under the upper lip, a hint of lower teeth, the tongue low in a
    wide opening. Every colour comes from the photo's inner-lip and skin tones (a grey photo gets a grey mouth)."""
    lip_luma, skin_luma = float(lip @ LUMA), float(skin @ LUMA)
    lip_chroma = lip - lip_luma
    cavity = 0.22 * lip_luma + 0.5 * lip_chroma
    tongue = 0.62 * lip_luma + 1.0 * lip_chroma
    teeth = min(235.0, 0.95 * skin_luma + 30.0) * (0.55 + 0.45 * skin / max(skin_luma, 1.0))  # lit like the skin
    edge = 2 * np.abs(u - 0.5)
    corner = np.clip(1.0 - edge * edge, 0.0, 1.0)[:, None]  # darker towards the corners
    from_upper, from_lower = v * gap, (1 - v) * gap
    soft = 0.03 * mouth_width + 1e-6
    upper_teeth = np.clip((0.17 * mouth_width - from_upper) / soft, 0, 1)[:, None]
    lower_teeth = np.clip((0.07 * mouth_width - from_lower) / soft, 0, 1)[:, None] * 0.6
    tongue_share = (np.clip((v - 0.6) / 0.4, 0, 1) * np.clip(gap / (0.25 * mouth_width + 1e-6), 0, 1))[:, None]
    base = cavity * (1 - tongue_share) + tongue * tongue_share
    teeth_share = np.maximum(upper_teeth, lower_teeth) * (0.45 + 0.55 * corner)
    shade = 1.0 - 0.25 * np.clip(from_upper / (0.17 * mouth_width + 1e-6), 0, 1)[:, None]  # darker towards the tips
    phase = np.mod(u * 8.0 + 0.5, 1.0)
    gaps = (0.82 + 0.18 * np.clip(4.0 * np.abs(phase - 0.5), 0, 1))[:, None]  # a hint of separate teeth
    colour = base * (1 - teeth_share) + teeth * shade * gaps * teeth_share * (0.6 + 0.4 * corner)
    colour = colour * (0.65 + 0.35 * corner)
    closed = np.clip(1.0 - gap / closed_gap(mouth_width), 0, 1)[:, None]
    return colour * (1 - closed) + 0.55 * lip * closed


def _mouth_fill(topology, image, source, destination, mouth_triangles, triangle, x, y):
    """The synthetic inside of the mouth and its share at each mouth pixel: where the lips opened beyond the
    photo's gap, and where the warp closed them (the dark line where lips meet, instead of squeezed teeth)."""
    gap_source, gap_destination = {}, {}
    for upper, lower in topology.lip_columns:
        gap_source[upper] = gap_source[lower] = float(np.linalg.norm(source[upper] - source[lower]))
        gap_destination[upper] = gap_destination[lower] = float(np.linalg.norm(destination[upper] - destination[lower]))
    first, last = topology.lip_columns[0][0], topology.lip_columns[-1][0]
    mouth_width = float(np.linalg.norm(destination[first] - destination[last]))
    corners = np.zeros((len(mouth_triangles), 3, 5))  # per corner: u, v, destination gap, opened, closed share
    for i, corner_ids in enumerate(mouth_triangles):
        for j, vertex in enumerate(corner_ids):
            u, v = topology.mouth_uv[int(vertex)]
            gap, was = gap_destination[int(vertex)], gap_source[int(vertex)]
            opened = 0.0 if gap <= 1e-9 else min(1.0, max(0.0, (gap - was) / gap))
            closed = 0.0 if was <= 1e-9 else min(1.0, max(0.0, (was - gap) / was))
            corners[i, j] = (u, v, gap, opened, closed)
    lip_points = np.array([source[v] for pair in topology.lip_columns for v in pair])
    lip = bilinear(image, lip_points[:, 0], lip_points[:, 1]).mean(0)
    skin_points = source[list(topology.skin_points)]
    skin = bilinear(image, skin_points[:, 0], skin_points[:, 1]).mean(0)
    p0, p1, p2 = (destination[mouth_triangles[triangle, k]] for k in range(3))
    det = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p2[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1])
    l1 = ((p2[:, 1] - p0[:, 1]) * (x - p0[:, 0]) - (p2[:, 0] - p0[:, 0]) * (y - p0[:, 1])) / det
    l2 = (-(p1[:, 1] - p0[:, 1]) * (x - p0[:, 0]) + (p1[:, 0] - p0[:, 0]) * (y - p0[:, 1])) / det
    l0 = 1 - l1 - l2
    at = corners[triangle]
    attributes = l0[:, None] * at[:, 0] + l1[:, None] * at[:, 1] + l2[:, None] * at[:, 2]
    synthetic = mouth_colour(attributes[:, 0], attributes[:, 1], attributes[:, 2], mouth_width, lip, skin)
    line = np.clip(1.0 - attributes[:, 2] / closed_gap(mouth_width), 0, 1) * np.clip(attributes[:, 4], 0, 1)
    share = np.maximum(np.clip(attributes[:, 3], 0, 1), line)
    return synthetic, share[:, None]


def warp_image(rgb: np.ndarray, topology: WarpTopology, source: np.ndarray, destination: np.ndarray,
               depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The piecewise-affine warp of an RGB uint8 image: (warped image, mask of the pixels written)."""
    height, width = rgb.shape[:2]
    triangles = paint_order(topology, depth)
    rings, mouths = len(topology.triangles["ring"]), len(topology.triangles["mouth"])
    moved = np.abs(destination - source).max(1) > STILL_PX
    active = moved[triangles].any(1)
    triangle, row, col0, col1 = raster_spans(destination, np.where(active[:, None], triangles, 0), width, height)
    lengths = col1 - col0 + 1
    pixel_triangle = np.repeat(triangle, lengths)
    pixel = np.repeat(row, lengths) * width + np.repeat(col0, lengths) + (
        np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    owner = np.full(height * width, -1, np.int64)
    np.maximum.at(owner, pixel, pixel_triangle)  # the last painted triangle wins
    covered = np.nonzero(owner >= 0)[0]
    owned = owner[covered]
    y, x = covered // width + 0.5, covered % width + 0.5
    maps = destination_to_source(destination, source, triangles)
    source_x = maps[owned, 0, 0] * x + maps[owned, 0, 1] * y + maps[owned, 0, 2]
    source_y = maps[owned, 1, 0] * x + maps[owned, 1, 1] * y + maps[owned, 1, 2]
    image = rgb.astype(np.float64)
    values = bilinear(image, source_x, source_y)
    in_mouth = (owned >= rings) & (owned < rings + mouths)
    if in_mouth.any():
        synthetic, share = _mouth_fill(topology, image, source, destination, triangles[rings:rings + mouths],
                                       owned[in_mouth] - rings, x[in_mouth], y[in_mouth])
        values[in_mouth] = values[in_mouth] * (1 - share) + synthetic * share
    out = rgb.copy().reshape(-1, rgb.shape[2])
    out[covered] = np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)
    mask = np.zeros(height * width, bool)
    mask[covered] = True
    return out.reshape(rgb.shape), mask.reshape(height, width)


def strong_reading_warning(reading) -> str | None:
    """Why a photo warps less well, if it does: a wide-open or broadly smiling mouth squeezes its teeth when closed."""
    reading = np.asarray(reading)
    jaw = float(reading[BLENDSHAPE_INDEX["jawOpen"]])
    smile = float(reading[[BLENDSHAPE_INDEX["mouthSmileLeft"], BLENDSHAPE_INDEX["mouthSmileRight"]]].mean())
    if max(jaw, smile) <= OPEN_MOUTH_WARNING:
        return None
    what = f"jawOpen {jaw:.2f}" if jaw >= smile else f"smile {smile:.2f}"
    return (f"the photo's own expression is strong ({what}): an expression with a closed mouth squeezes its teeth into "
            "the lips; a neutral, closed-mouth photo warps best")


def warp_photos(motion: FaceMotion, photos: list[np.ndarray], faces: list[PosedFace], targets: np.ndarray,
                intensity: float, turns: np.ndarray, on_progress=None) -> list[WarpResult]:
    """Every photo warped to every target (photo-major: photo 0 in each expression, then photo 1, ...).
    ``targets`` (E, 52) as the estimator reads them, ``turns`` (E, 3) degrees. ``on_progress(done, total)`` is
    called after each warp (and may raise to cancel)."""
    total, results = len(photos) * len(targets), []
    for rgb, face in zip(photos, faces):
        for target, turn in zip(targets, turns):
            results.append(warp_photo(motion, rgb, face, target, intensity, turn))
            if on_progress is not None:
                on_progress(len(results), total)
    return results
