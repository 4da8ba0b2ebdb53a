"""The face-motion model: how MediaPipe's 478 face landmarks move with each blendshape the estimator can read,
learnt from real photos, and how a photo's face is moved to another expression and a small head turn.

The model (``data/face_motion.json``, written by ``tools/fit_face_motion.py``) lives in the frame of MediaPipe's
canonical face model (centimetres; x to the image's right, y up, z towards the camera): per modelled blendshape,
how far every landmark moves per unit. A photo's landmarks are brought into that frame by its head rotation
(yaw, pitch, roll from the landmarker) and a scale and shift fitted on MediaPipe's own rigid Procrustes points;
the expression change is added there; the face is turned and projected back. The browser (``js/face_warp.js``)
reads the same file and does the same arithmetic in the same order, so both give the same landmarks (a test
holds them to 1e-9).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import GenAffectInputError
from ..files.packaged_data import data_path
from .batch import BLENDSHAPE_INDEX, MOVEMENT_NAMES, NUM_BLENDSHAPES
from .face_landmarks import NUM_LANDMARKS

MODEL_PATH = data_path("face_motion.json")
FORMAT = "genaffect.face_motion"
VERSION = 1
CANONICAL_VERTICES = 468  # the canonical mesh has no iris points; the model moves all 478 landmarks
PAINT_GROUPS = ("ring", "mouth", "eye", "skin")  # painting order of the warp's triangles
MAX_TURN_DEGREES = 30.0  # a warp has no hidden side to show: beyond this a turned head tears


def rotation_from_degrees(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Ry(yaw) @ Rx(pitch) @ Rz(roll): the convention of ``face_landmarks.head_pose_degrees``. Multiplied out
    term by term in the order the browser's ``rotFromYpr`` uses, so both give the same bits."""
    y, p, r = (math.radians(float(v)) for v in (yaw, pitch, roll))
    ry = ((math.cos(y), 0.0, math.sin(y)), (0.0, 1.0, 0.0), (-math.sin(y), 0.0, math.cos(y)))
    rx = ((1.0, 0.0, 0.0), (0.0, math.cos(p), -math.sin(p)), (0.0, math.sin(p), math.cos(p)))
    rz = ((math.cos(r), -math.sin(r), 0.0), (math.sin(r), math.cos(r), 0.0), (0.0, 0.0, 1.0))
    return _mul3(_mul3(ry, rx), rz)


def _mul3(a, b) -> np.ndarray:
    return np.array([[a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j] for j in range(3)] for i in range(3)])


@dataclass(frozen=True)
class WarpTopology:
    """The warp mesh: the 478 landmarks plus two border rings around the face oval, and its triangles in painting
    groups. Vertices 0..477 are landmarks, then the inner ring, then the outer ring (one per oval point each)."""

    oval: tuple[int, ...]
    lip_columns: tuple[tuple[int, int], ...]  # inner-lip (upper, lower) pairs, corner to corner
    skin_points: tuple[int, ...]  # where the photo's skin tone is sampled (teeth are lit like it)
    ring_factors: tuple[float, float]  # ring radii relative to the oval, about its centroid
    ring_follow: tuple[float, float]  # share of the nearest oval point's movement each ring follows
    pivot: np.ndarray  # (3,) centre of head turns, canonical frame (cm)
    triangles: dict  # group -> (T, 3) int vertex indices, groups in PAINT_GROUPS order
    mouth_uv: dict  # lip-column vertex -> (u along the mouth 0..1, v across: upper lip 0, lower lip 1, corners 0.5)

    @property
    def vertex_count(self) -> int:
        return NUM_LANDMARKS + 2 * len(self.oval)


@dataclass(frozen=True)
class CanonicalMesh:
    """MediaPipe's canonical face model (Apache-2.0): its 468 vertices, triangles and rigid Procrustes points."""

    vertices: np.ndarray  # (468, 3) cm
    triangles: np.ndarray  # (T, 3)
    basis_ids: np.ndarray  # (B,) the landmarks MediaPipe's own pose fit uses
    basis_weights: np.ndarray  # (B,)


@dataclass(frozen=True)
class FaceMotion:
    names: tuple[str, ...]  # the K modelled blendshapes, a subset of MediaPipe's in its order
    columns: np.ndarray  # (K,) their index among the 52
    moves: np.ndarray  # (K, 478 * 3) cm per unit, landmark-major x, y, z
    reach: np.ndarray  # (K,) the most of each blendshape the photos it was fitted on showed: targets stop there
    mesh: CanonicalMesh
    mean_shape: np.ndarray  # (478, 3) mean pose-normalised landmarks of the people it was fitted on
    topology: WarpTopology

    def within_reach(self, target) -> np.ndarray:
        """The 52 target blendshapes with each modelled one limited to what real faces showed (a linear model is
        not asked to extrapolate far beyond its photos)."""
        limited = np.array(target, dtype=np.float64)
        for k, column in enumerate(self.columns):
            limited[column] = min(limited[column], self.reach[k])
        return limited

    def beyond_reach(self, target) -> dict[str, tuple[float, float]]:
        """{blendshape: (asked, reach)} for the targets :meth:`within_reach` limits."""
        return {name: (float(target[c]), float(self.reach[k]))
                for k, (name, c) in enumerate(zip(self.names, self.columns)) if target[c] > self.reach[k]}

    def move(self, landmarks: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """(478, 3) canonical-frame landmarks moved by a change of the 52 blendshapes (unmodelled ones move
        nothing). Added one blendshape at a time, skipping zeros, as the browser does."""
        delta = np.asarray(delta, dtype=np.float64)
        moved = np.array(landmarks, dtype=np.float64).reshape(-1)
        for k, column in enumerate(self.columns):
            if delta[column] != 0:
                moved += delta[column] * self.moves[k]
        return moved.reshape(NUM_LANDMARKS, 3)


def _invalid(message: str) -> GenAffectInputError:
    return GenAffectInputError(f"face-motion model: {message} Reinstall GenAffect, or rebuild the file with "
                               "tools/fit_face_motion.py.")


def _int_list(data: dict, key: str, length: int | None, below: int, where: str) -> np.ndarray:
    values = data.get(key)
    if not isinstance(values, list) or (length is not None and len(values) != length):
        raise _invalid(f"{where}.{key} must be a list of {length if length is not None else 'some'} integers.")
    array = np.asarray(values)
    if array.size and (array.dtype.kind not in "iu" or array.min() < 0 or array.max() >= below):
        raise _invalid(f"{where}.{key} holds values outside 0..{below - 1}.")
    return array.astype(np.int64)


def _float_list(data: dict, key: str, length: int, where: str) -> np.ndarray:
    values = data.get(key)
    if not isinstance(values, list) or len(values) != length:
        raise _invalid(f"{where}.{key} must be a list of {length} numbers.")
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise _invalid(f"{where}.{key} holds NaN or infinite values.")
    return array


def _decode_moves(moves: dict, count: int) -> np.ndarray:
    expected = [count, NUM_LANDMARKS, 3]
    if moves.get("shape") != expected:
        raise _invalid(f"moves.shape is {moves.get('shape')}, expected {expected} for {count} blendshapes.")
    scale = _float_list(moves, "scale", count, "moves")
    encoded = moves.get("data")
    size = count * NUM_LANDMARKS * 3 * 2  # int16
    if not isinstance(encoded, str) or len(encoded) != 4 * math.ceil(size / 3):  # checked before decoding
        raise _invalid(f"moves.data must be base64 of {size} bytes (int16 little-endian).")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise _invalid(f"moves.data is not base64 ({error}).") from error
    quantised = np.frombuffer(raw, dtype="<i2").astype(np.float64).reshape(count, -1)
    return quantised * scale[:, None]


def _topology(warp: dict) -> WarpTopology:
    if not isinstance(warp, dict):
        raise _invalid("the warp section is missing.")
    oval = _int_list(warp, "oval", None, NUM_LANDMARKS, "warp")
    vertices = NUM_LANDMARKS + 2 * len(oval)
    columns = warp.get("lip_columns")
    if not isinstance(columns, list) or len(columns) < 3 or any(not isinstance(c, list) or len(c) != 2
                                                                for c in columns):
        raise _invalid("warp.lip_columns must be a list of [upper, lower] landmark pairs.")
    lips = _int_list({"lips": [v for pair in columns for v in pair]}, "lips", None, NUM_LANDMARKS, "warp")
    triangles = {}
    for group in PAINT_GROUPS:
        flat = _int_list(warp.get("triangles", {}), group, None, vertices, "warp.triangles")
        if flat.size % 3:
            raise _invalid(f"warp.triangles.{group} has {flat.size} indices, not a multiple of 3.")
        triangles[group] = flat.reshape(-1, 3)
    uv = warp.get("mouth_uv")
    lip_set = set(lips.tolist())
    if not isinstance(uv, dict) or {int(k) for k in uv if k.isdigit()} != lip_set or len(uv) != len(lip_set):
        raise _invalid("warp.mouth_uv must name exactly the lip-column landmarks.")
    mouth_vertices = set(triangles["mouth"].ravel().tolist())
    if not mouth_vertices <= lip_set:
        raise _invalid("warp.triangles.mouth uses landmarks that are not on the inner lips.")
    return WarpTopology(
        oval=tuple(oval.tolist()),
        lip_columns=tuple((int(a), int(b)) for a, b in lips.reshape(-1, 2)),
        skin_points=tuple(_int_list(warp, "skin_points", None, NUM_LANDMARKS, "warp").tolist()),
        ring_factors=tuple(_float_list(warp, "ring_factors", 2, "warp")),
        ring_follow=tuple(_float_list(warp, "ring_follow", 2, "warp")),
        pivot=_float_list(warp, "pivot_cm", 3, "warp"),
        triangles=triangles,
        mouth_uv={int(k): (float(v[0]), float(v[1])) for k, v in uv.items()},
    )


def parse_face_motion(data: dict) -> FaceMotion:
    """Check a face-motion file's contents (format, names, sizes, indices) and build the model. Every size is
    checked against what the format fixes before anything is allocated from it."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _invalid(f"not a {FORMAT} file.")
    if data.get("version") != VERSION:
        raise _invalid(f"version {data.get('version')!r}; this GenAffect reads version {VERSION} (a newer file needs a "
                       "newer GenAffect).")
    if data.get("landmarks") != NUM_LANDMARKS:
        raise _invalid(f"it models {data.get('landmarks')} landmarks; MediaPipe gives {NUM_LANDMARKS}.")
    names = data.get("blendshapes")
    if (not isinstance(names, list) or not names or len(set(names)) != len(names)
            or any(name not in MOVEMENT_NAMES for name in names)):
        raise _invalid("blendshapes must be distinct MediaPipe movement names.")
    columns = np.array([BLENDSHAPE_INDEX[name] for name in names])
    if np.any(np.diff(columns) <= 0):
        raise _invalid("blendshapes must be in MediaPipe's order.")
    reach = _float_list(data, "reach", len(names), "model")
    if reach.min() <= 0 or reach.max() > 1:
        raise _invalid("reach must hold blendshape values in (0, 1].")
    mesh = data.get("mesh") or {}
    vertices = _float_list(mesh, "vertices", CANONICAL_VERTICES * 3, "mesh").reshape(-1, 3)
    triangles = _int_list(mesh, "triangles", None, CANONICAL_VERTICES, "mesh")
    if triangles.size % 3:
        raise _invalid("mesh.triangles is not a multiple of 3 long.")
    basis_ids = _int_list(mesh, "procrustes_ids", None, CANONICAL_VERTICES, "mesh")
    basis_weights = _float_list(mesh, "procrustes_weights", len(basis_ids), "mesh")
    if len(basis_ids) < 4 or basis_weights.min() < 0 or basis_weights.sum() <= 0:
        raise _invalid("mesh.procrustes_weights must be 0 or more with a positive sum, over 4 points or more.")
    return FaceMotion(
        names=tuple(names), columns=columns, moves=_decode_moves(data.get("moves") or {}, len(names)), reach=reach,
        mesh=CanonicalMesh(vertices, triangles.reshape(-1, 3), basis_ids, basis_weights),
        mean_shape=_float_list(data, "mean_shape", NUM_LANDMARKS * 3, "model").reshape(-1, 3),
        topology=_topology(data.get("warp")),
    )


@lru_cache(maxsize=1)
def face_motion_data() -> dict:
    """The model as stored (what the browser reads); read once. Do not modify it."""
    with open(MODEL_PATH, encoding="utf-8") as handle:
        return json.load(handle)


@lru_cache(maxsize=1)
def face_motion() -> FaceMotion:
    return parse_face_motion(face_motion_data())


@dataclass(frozen=True)
class PosedFace:
    """One photo's face in the model's frame: pixels q (y up, z towards the camera) = scale * R @ c + shift."""

    landmarks: np.ndarray  # (478, 3) the landmarker's normalised landmarks
    reading: np.ndarray  # (52,) the landmarker's blendshapes: the photo's own expression
    width: int
    height: int
    head_pose: np.ndarray  # (3,) yaw, pitch, roll in degrees
    rotation: np.ndarray  # (3, 3)
    scale: float
    shift: np.ndarray  # (3,)
    canonical: np.ndarray  # (478, 3) the landmarks in the model's frame (cm)


def pose_face(mesh: CanonicalMesh, landmarks, reading, head_pose, width: int, height: int) -> PosedFace:
    """Bring a photo's landmarks into the model's frame: R from the head pose, scale and shift by weighted least
    squares on MediaPipe's rigid Procrustes points (orthographic; any consistent R works, since the warp uses the
    same map forwards and back)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (NUM_LANDMARKS, 3) or not np.all(np.isfinite(landmarks)):
        raise GenAffectInputError(f"a warp needs {NUM_LANDMARKS} finite landmarks (x, y, z), got shape "
                                  f"{list(landmarks.shape)}.")
    reading = np.asarray(reading, dtype=np.float64)
    if reading.shape != (NUM_BLENDSHAPES,) or not np.all(np.isfinite(reading)):
        raise GenAffectInputError(f"a warp needs the photo's {NUM_BLENDSHAPES} blendshapes, got shape "
                                  f"{list(reading.shape)}.")
    head_pose = np.asarray(head_pose, dtype=np.float64)
    if head_pose.shape != (3,) or not np.all(np.isfinite(head_pose)):
        raise GenAffectInputError("a warp needs the photo's head pose as yaw, pitch and roll in degrees.")
    q = landmarks * np.array([width, -height, -width], dtype=np.float64)
    rotation = rotation_from_degrees(*head_pose)
    total = 0.0
    for w in mesh.basis_weights:
        total += w
    weights = [w / total for w in mesh.basis_weights]
    a = [np.array([sum_row(rotation[r], mesh.vertices[i]) for r in range(3)]) for i in mesh.basis_ids]  # R c
    b = [q[i] for i in mesh.basis_ids]
    a_mean, b_mean = np.zeros(3), np.zeros(3)
    for w, ai, bi in zip(weights, a, b):  # summed point by point, in the browser's order
        a_mean += w * ai
        b_mean += w * bi
    numerator = denominator = 0.0
    for w, ai, bi in zip(weights, a, b):
        for d in range(3):
            numerator += w * (ai[d] - a_mean[d]) * (bi[d] - b_mean[d])
            denominator += w * (ai[d] - a_mean[d]) ** 2
    scale = numerator / denominator
    shift = b_mean - scale * a_mean
    v = q - shift
    canonical = (v[:, 0:1] * rotation[0] + v[:, 1:2] * rotation[1] + v[:, 2:3] * rotation[2]) / scale  # R^T v / s
    return PosedFace(landmarks, reading, int(width), int(height), head_pose, rotation, float(scale), shift, canonical)


def sum_row(row, vector) -> float:
    return row[0] * vector[0] + row[1] * vector[1] + row[2] * vector[2]


def target_landmarks(motion: FaceMotion, face: PosedFace, target, intensity: float = 1.0,
                     turn=(0.0, 0.0, 0.0)) -> np.ndarray:
    """(478, 3) normalised landmarks of the face moved from its own expression towards ``target`` (52 blendshapes,
    as the estimator reads them; each limited to the model's reach): by ``intensity`` x (target - reading), so 0
    leaves it and 1 reaches the target; and turned by ``turn`` (yaw, pitch, roll in degrees, about a pivot inside
    the head)."""
    target = np.asarray(target, dtype=np.float64)
    if target.shape != (NUM_BLENDSHAPES,) or not np.all(np.isfinite(target)):
        raise GenAffectInputError(f"a target expression has {NUM_BLENDSHAPES} finite blendshapes, got shape "
                                  f"{list(target.shape)}.")
    delta = float(intensity) * (motion.within_reach(target) - face.reading)
    turn = np.asarray(turn, dtype=np.float64)
    if np.any(np.abs(turn) > MAX_TURN_DEGREES):
        raise GenAffectInputError(f"a head turn of {turn.round(1).tolist()} degrees is more than a warp can show "
                                  f"(at most {MAX_TURN_DEGREES:g} each way: the hidden side of the head is not in the "
                                  "photo). Turn less.")
    moved = motion.move(face.canonical, delta)
    rotation = face.rotation
    turned = rotation_from_degrees(*(face.head_pose + turn))
    pivot = motion.topology.pivot
    shift = face.shift + face.scale * np.array([sum((rotation[r][c] - turned[r][c]) * pivot[c] for c in range(3))
                                                for r in range(3)])
    x, y, z = moved[:, 0], moved[:, 1], moved[:, 2]
    out = np.empty_like(moved)
    for r, size in enumerate((face.width, -face.height, -face.width)):
        out[:, r] = (face.scale * (turned[r][0] * x + turned[r][1] * y + turned[r][2] * z) + shift[r]) / size
    return out
