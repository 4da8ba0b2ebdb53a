"""Per-face crops with exact geometry, and edited crops stitched back under a feathered core mask.

A crop is an affine map from image pixels to a ``size`` x ``size`` square (pixel centres at integer coordinates
in both): upright around the face box (the instruction editors), or FFHQ-aligned (Arc2Face's Reference Adapter
was trained on that framing). Its core is an ellipse around the face in crop coordinates: the mask is 1 inside,
falls smoothly to exactly 0 over a feather band, and is evaluated analytically wherever it is needed (never
resampled). Stitching writes an edited crop back only where that mask is above 0, so every other pixel of the
image - the background and the other people - stays bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import GenAffectInputError
from .face_align import ffhq_square, square_to_output

FRAMINGS = ("upright", "FFHQ-aligned (Arc2Face)")
PAIRINGS = ("one expression per face", "every expression on every face")
# Crop pixels kept free between the mask's outer edge and the crop's edge: the resamplers read up to 4 pixels
# around a point (Lanczos), so a masked pixel never reads the crop's replicated border.
EDGE_MARGIN = 4


@dataclass(frozen=True, eq=False)
class FaceCrop:
    """One crop: where it was cut from, what it shows, and where it goes back."""

    source: int  # the input image it was cut from
    face: int  # the chosen face (row of the listing's chosen faces): the person
    expression: int  # the expression row it is edited to
    picture: int  # the output picture it is stitched into
    matrix: np.ndarray  # (2, 3) image pixels -> crop pixels
    size: int
    core_centre: np.ndarray  # (2,) the core ellipse's centre, crop pixels
    core_axes: np.ndarray  # (2,) its semi-axes, crop pixels
    feather: float  # the band where the mask falls to 0, as a share of the core's radius
    label: str

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return math.sqrt(abs(float(np.linalg.det(self.matrix[:, :2]))))

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The core mask at crop coordinates (x, y): 1 inside the ellipse, a smoothstep to exactly 0 at
        (1 + feather) times its radius."""
        radius = np.hypot((x - self.core_centre[0]) / self.core_axes[0], (y - self.core_centre[1]) / self.core_axes[1])
        if self.feather == 0:
            return (radius <= 1.0).astype(np.float32)
        t = np.clip((1.0 + self.feather - radius) / self.feather, 0.0, 1.0)
        return (t * t * (3.0 - 2.0 * t)).astype(np.float32)

    def crop_mask(self) -> np.ndarray:
        """The mask over the crop itself, (size, size)."""
        y, x = np.mgrid[0:self.size, 0:self.size].astype(np.float64)
        return self.mask(x, y)


@dataclass(eq=False)
class FaceCrops:
    """The GA_FACE_CROPS socket: every crop in order, and the pictures they go back into."""

    crops: list[FaceCrop]
    image_sizes: list[tuple[int, int]]  # (height, width) of each input image
    picture_sources: list[int]  # the input image each output picture starts from
    framing: str

    @property
    def people(self) -> list[int]:
        """The person (chosen face) of each crop: crops of one person may share attention, others never."""
        return [crop.face for crop in self.crops]

    def report(self) -> str:
        lines = [f"{len(self.crops)} crop(s) ({self.framing}, {self.crops[0].size} px) into "
                 f"{len(self.picture_sources)} picture(s)"]
        for index, crop in enumerate(self.crops):
            lines.append(f"  crop {index}: {crop.label} -> picture {crop.picture} (image {crop.source}), "
                         f"{crop.scale:.2f} crop px per image px")
        return "\n".join(lines)


def pair_rows(face_sources: list[int], expressions: int, pairing: str) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Which (face, expression row, picture) each crop is, and each picture's input image.

    ``face_sources``: the input image of each chosen face, in order. "one expression per face": expression row i
    goes to face i (or one row to every face), every face of an image into one picture of it. "every expression on
    every face": expression-major - all faces with expression 0, then all with expression 1, ...; one picture per
    expression and image."""
    faces = len(face_sources)
    sources = list(dict.fromkeys(face_sources))  # the images with chosen faces, in order
    if pairing == PAIRINGS[0]:
        if expressions not in (1, faces):
            raise GenAffectInputError(
                f"{expressions} expressions for {faces} chosen faces: give one expression per face (row i goes to "
                "chosen face i, in the order Find Faces reports), one for every face, or choose the pairing "
                f"'{PAIRINGS[1]}'.")
        rows = [(face, face if expressions == faces else 0, sources.index(face_sources[face])) for face in range(faces)]
        return rows, sources
    if pairing == PAIRINGS[1]:
        rows = [(face, row, row * len(sources) + sources.index(face_sources[face]))
                for row in range(expressions) for face in range(faces)]
        return rows, sources * expressions
    raise GenAffectInputError(f"pairing must be one of {PAIRINGS}, got {pairing!r}.")


def upright_matrix(box: np.ndarray, context: float, size: int) -> np.ndarray:
    """Image -> crop for a square window of ``context`` times the box's longer side around its centre, its edges on
    pixel edges (so at one crop pixel per image pixel the crop is an exact copy)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(8, int(round(context * max(x2 - x1, y2 - y1))))
    left = round((x1 + x2) / 2 - side / 2) - 0.5
    top = round((y1 + y2) / 2 - side / 2) - 0.5
    k = size / side
    return np.array([[k, 0.0, -left * k - 0.5], [0.0, k, -top * k - 0.5]])


def ffhq_matrix(keypoints: np.ndarray, context: float, size: int) -> np.ndarray:
    """Image -> crop for FFHQ's oriented square (Arc2Face's training framing), ``context`` times as large."""
    square = ffhq_square(keypoints)
    centre = square.mean(axis=0)
    return square_to_output(centre + (square - centre) * context, size).astype(np.float64)


def plan_crop(box: np.ndarray, keypoints: np.ndarray, *, framing: str, context: float, size: int, core: float,
              feather: float, source: int, face: int, expression: int, picture: int, label: str) -> FaceCrop:
    """One crop's geometry; refused when its mask would reach the crop's edge."""
    if size < 64 or size % 16:
        raise GenAffectInputError(f"the crop size must be a multiple of 16 from 64 up, got {size}.")
    if context <= 0 or core <= 0 or feather < 0:
        raise GenAffectInputError(f"context ({context}) and core ({core}) must be above 0, feather ({feather}) 0 or "
                                  "more.")
    if framing == FRAMINGS[0]:
        matrix = upright_matrix(box, context, size)
    elif framing == FRAMINGS[1]:
        matrix = ffhq_matrix(keypoints, context, size)
    else:
        raise GenAffectInputError(f"framing must be one of {FRAMINGS}, got {framing!r}.")
    x1, y1, x2, y2 = (float(v) for v in box)
    corners = _apply(matrix, np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]]))
    low, high = corners.min(axis=0), corners.max(axis=0)
    crop = FaceCrop(source, face, expression, picture, matrix, int(size), (low + high) / 2, core * (high - low) / 2,
                    float(feather), label)
    # the mask's reach from the crop's centre, against the room there is (a wider context shrinks the face in it)
    reach = np.abs(crop.core_centre - (size - 1) / 2) + crop.core_axes * (1.0 + crop.feather)
    room = (size - 1) / 2 - EDGE_MARGIN
    if np.any(reach > room):
        needed = float(np.max(reach / room)) * context
        raise GenAffectInputError(
            f"{label}: the mask (core {core} x the face box, feather {feather}) reaches beyond the crop; raise context "
            f"to about {needed:.1f} or lower core or feather.")
    return crop


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def crop_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop of an (H, W, 3) float32 0..1 image by ``matrix`` (image -> crop pixels): Lanczos
    when enlarging, area-averaged first when shrinking by more than 2 (as FFHQ's recipe does); pixels beyond the
    image repeat its edge. Resampling overshoot is clipped to 0..1 (the crop is a new picture; the image itself is
    never changed)."""
    import cv2  # lazily, like the alignment: a broken OpenCV breaks cropping only

    matrix = np.asarray(matrix, np.float64)
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    shrink = int(math.floor(0.5 / scale)) if scale < 0.5 else 1
    if shrink > 1:
        height, width = image.shape[:2]
        small = (max(1, round(width / shrink)), max(1, round(height / shrink)))
        image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        factors = np.array([width / small[0], height / small[1]])
        shift = matrix[:, 2] + matrix[:, :2] @ (0.5 * factors - 0.5)  # pixel centres of the smaller image
        matrix = np.concatenate([matrix[:, :2] * factors, shift[:, None]], axis=1)
    flags = cv2.INTER_LANCZOS4 if scale > 1 else cv2.INTER_LINEAR
    out = cv2.warpAffine(np.ascontiguousarray(image, np.float32), matrix, (size, size), flags=flags,
                         borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 1.0)


def support_box(crop: FaceCrop, height: int, width: int) -> tuple[int, int, int, int] | None:
    """The image pixels (x0, y0, x1, y1, end-exclusive) whose mask can be above 0; None when outside the image."""
    reach = crop.core_axes * (1.0 + crop.feather)
    corners = crop.core_centre + np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]) * reach
    inverse = np.linalg.inv(np.vstack([crop.matrix, [0.0, 0.0, 1.0]]))[:2]
    points = _apply(inverse, corners)
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return None if x0 >= x1 or y0 >= y1 else (int(x0), int(y0), int(x1), int(y1))


def stitch(images: list[np.ndarray], edited: list[np.ndarray],
           crops: FaceCrops) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each output picture (its input image with its crops written back) and its mask (the union of its crops'
    masks, in image pixels). ``images``: the (H, W, 3) float32 inputs; ``edited``: one square float32 crop per
    crop, of any side (a crop edited at another size is scaled back)."""
    import cv2

    if len(edited) != len(crops.crops):
        raise GenAffectInputError(f"{len(edited)} edited crops for {len(crops.crops)} crops: edit every crop of Crop "
                                  "Faces once, in order (one image per crop).")
    pictures, masks = [], []
    for number, source in enumerate(crops.picture_sources):
        picture = np.array(images[source], dtype=np.float32, copy=True)
        height, width = picture.shape[:2]
        if (height, width) != tuple(crops.image_sizes[source]):
            wanted_height, wanted_width = crops.image_sizes[source]
            raise GenAffectInputError(f"image {source} is {width}x{height}, but its faces were cropped from a "
                                      f"{wanted_width}x{wanted_height} image; stitch into the images Crop Faces cut "
                                      "from.")
        total = np.zeros((height, width), np.float32)
        for index, crop in enumerate(crops.crops):
            if crop.picture != number:
                continue
            region = support_box(crop, height, width)
            if region is None:
                continue
            x0, y0, x1, y1 = region
            y, x = np.mgrid[y0:y1, x0:x1].astype(np.float64)
            cx = crop.matrix[0, 0] * x + crop.matrix[0, 1] * y + crop.matrix[0, 2]
            cy = crop.matrix[1, 0] * x + crop.matrix[1, 1] * y + crop.matrix[1, 2]
            weight = crop.mask(cx, cy)
            inside = weight > 0
            if not inside.any():
                continue
            face = _sample(_edited_square(edited[index], index), crop, cx, cy, cv2)
            window = picture[y0:y1, x0:x1]
            blend = window + weight[..., None] * (face - window)
            window[inside] = blend[inside]
            total[y0:y1, x0:x1] = np.maximum(total[y0:y1, x0:x1], weight)
        pictures.append(picture)
        masks.append(total)
    return pictures, masks


def _edited_square(edited: np.ndarray, index: int) -> np.ndarray:
    edited = np.asarray(edited, np.float32)
    if edited.ndim != 3 or edited.shape[0] != edited.shape[1]:
        raise GenAffectInputError(f"edited crop {index} is {list(edited.shape)}; crops go back square (the editor's "
                                  "output of Crop Faces' crops, not resized to another shape).")
    return edited


def _sample(edited: np.ndarray, crop: FaceCrop, cx: np.ndarray, cy: np.ndarray, cv2) -> np.ndarray:
    """The edited crop read at crop coordinates (given on the crop's own grid, whatever the edited side): scaled to
    the crop's grid first, and area-reduced first where it is much finer than the image."""
    side = edited.shape[0]
    target = side
    if crop.scale * side / crop.size > 2:  # finer than the image: reduce first so reading it does not alias
        target = max(8, int(round(crop.size / crop.scale)))
        edited = cv2.resize(edited, (target, target), interpolation=cv2.INTER_AREA)
    factor = target / crop.size
    map_x = ((cx + 0.5) * factor - 0.5).astype(np.float32)
    map_y = ((cy + 0.5) * factor - 0.5).astype(np.float32)
    return cv2.remap(edited, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
