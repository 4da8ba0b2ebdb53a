"""MediaPipe FaceLandmarker results -> GenAffect expressions (blendshapes, 478 landmarks, head pose).

Works on the result objects only (``FaceLandmarkerResult``: per face 478 normalised landmarks, 52
blendshape categories and a 4x4 facial transformation matrix), so it is testable without the model.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import GenAffectInputError
from .batch import BLENDSHAPE_INDEX, NUM_BLENDSHAPES

NUM_LANDMARKS = 478


def head_pose_degrees(matrix: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees from MediaPipe's facial transformation matrix.

    The rotation is read as R = Ry(yaw) @ Rx(pitch) @ Rz(roll) in MediaPipe's right-handed camera
    frame (x right, y up, z towards the camera): yaw turns about the vertical axis, pitch nods about
    the horizontal one, roll tilts in the image plane. Any scale in the matrix is divided out.
    """
    rotation = np.asarray(matrix, dtype=np.float64)[:3, :3]
    rotation = rotation / np.linalg.norm(rotation, axis=0, keepdims=True)
    pitch = math.asin(float(np.clip(-rotation[1, 2], -1.0, 1.0)))
    yaw = math.atan2(rotation[0, 2], rotation[2, 2])
    roll = math.atan2(rotation[1, 0], rotation[1, 1])
    return np.degrees([yaw, pitch, roll]).astype(np.float32)


def rotation_from_degrees(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The inverse of :func:`head_pose_degrees` (a 3x3 rotation), for tests and previews."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def blendshape_scores(categories) -> np.ndarray:
    """(52,) scores from one face's blendshape categories, placed by name (never by position)."""
    vector = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
    seen = set()
    for category in categories:
        name = category.category_name
        if name not in BLENDSHAPE_INDEX:
            raise GenAffectInputError(f"MediaPipe returned an unknown blendshape {name!r}; is the .task file a face landmarker?")
        vector[BLENDSHAPE_INDEX[name]] = category.score
        seen.add(name)
    if len(seen) != NUM_BLENDSHAPES:
        raise GenAffectInputError(
            f"MediaPipe returned {len(seen)} blendshapes, expected {NUM_BLENDSHAPES}; "
            "create the FaceLandmarker with output_face_blendshapes=True."
        )
    return vector


def landmark_array(landmarks) -> np.ndarray:
    """(478, 3) normalised x, y (0..1 of the image) and z."""
    columns = [[p.x for p in landmarks], [p.y for p in landmarks], [p.z for p in landmarks]]
    array = np.ascontiguousarray(np.array(columns, dtype=np.float32).T)  # lists of floats: read 2x faster than tuples
    if array.shape != (NUM_LANDMARKS, 3):
        raise GenAffectInputError(f"expected {NUM_LANDMARKS} face landmarks, got {array.shape[0]}.")
    return array


def faces_from_result(result) -> list[dict]:
    """Every face of a FaceLandmarkerResult, converted once: blendshapes, landmarks, head pose and the
    mean landmark presence (None when MediaPipe does not report it)."""
    if not result.face_landmarks:
        return []
    if not result.face_blendshapes:
        raise GenAffectInputError("the FaceLandmarker was created without blendshapes (output_face_blendshapes=True).")
    if not result.facial_transformation_matrixes:
        raise GenAffectInputError(
            "the FaceLandmarker was created without pose (output_facial_transformation_matrixes=True)."
        )
    faces = []
    for landmarks, categories, matrix in zip(result.face_landmarks, result.face_blendshapes, result.facial_transformation_matrixes):
        presence = [p.presence for p in landmarks]
        faces.append({
            "blendshapes": blendshape_scores(categories),
            "landmarks": landmark_array(landmarks),
            "head_pose": head_pose_degrees(np.asarray(matrix)),
            "presence": None if any(p is None for p in presence) else float(np.mean(presence)),
        })
    return faces


CORE_CANONICAL = 192  # ComfyUI core's landmarks_3d are in its 192-pixel face crop's units
CORE_INPUT = "face_landmarks"  # the name of the FACE_LANDMARKS input on every node that takes it
CORE_FIX = "connect ComfyUI's MediaPipe Face Landmarker node, run on the same images, directly"


def _core_error(where: str, what: str) -> GenAffectInputError:
    return GenAffectInputError(f"{CORE_INPUT}{where}: {what}; {CORE_FIX}.")


def core_frames(value, images: int) -> list:
    """The per-frame face lists of ComfyUI core's FACE_LANDMARKS (``{"frames": [[face, ...], ...], ...}``), one
    frame per image, checked down to each face being a dict (:func:`faces_from_core` checks the faces)."""
    if not isinstance(value, dict) or "frames" not in value:
        raise _core_error("", f"is a {type(value).__name__} without 'frames', not ComfyUI's FACE_LANDMARKS")
    frames = value["frames"]
    if not isinstance(frames, (list, tuple)):
        raise _core_error("", f"its frames are a {type(frames).__name__}, not a list")
    if len(frames) != images:
        raise GenAffectInputError(f"{CORE_INPUT} (FACE_LANDMARKS) describes {len(frames)} frames for {images} images; "
                                  "run ComfyUI's MediaPipe Face Landmarker on the same images.")
    for number, frame in enumerate(frames):
        if not isinstance(frame, (list, tuple)) or not all(isinstance(face, dict) for face in frame):
            raise _core_error(f" frame {number}", "is not a list of faces (dicts)")
    return list(frames)


def _core_array(face: dict, key: str, shape: tuple, where: str) -> np.ndarray:
    try:
        array = np.asarray(face[key], dtype=np.float64)
    except KeyError:
        raise _core_error(where, f"has no {key}") from None
    except (TypeError, ValueError):
        raise _core_error(where, f"its {key} are not numbers") from None
    if array.shape != shape:
        raise _core_error(where, f"its {key} have shape {list(array.shape)}, expected {list(shape)}")
    if not np.all(np.isfinite(array)):
        raise _core_error(where, f"its {key} hold NaN or infinite values")
    return array


def faces_from_core(faces: list[dict], image_size: tuple[int, int], where: str = "") -> list[dict]:
    """ComfyUI core's FACE_LANDMARKS faces of one frame (its MediaPipe Face Landmarker node, pure PyTorch:
    blendshapes by name, landmarks_xy in pixels, landmarks_3d in its crop's units, a presence logit, the
    facial transformation matrix) -> the face dicts :func:`faces_from_result` makes from the mediapipe
    wheel. x and y are normalised by the image size; z, which MediaPipe gives in about the units of x, is
    the crop's depth scaled by the face's width in the image (an approximation: core does not give it).
    Anything malformed is refused naming the input, the frame and the face (``where`` names the frame)."""
    height, width = image_size
    converted = []
    for number, face in enumerate(faces):
        at = f"{where} face {number}"
        scores = face.get("blendshapes")
        if not isinstance(scores, dict) or set(scores) != set(BLENDSHAPE_INDEX):
            names = set(scores) if isinstance(scores, dict) else set()
            raise GenAffectInputError(
                f"{CORE_INPUT}{at}: FACE_LANDMARKS has {len(names)} blendshapes "
                f"({sorted(map(str, names - set(BLENDSHAPE_INDEX)))[:3]} unknown); {CORE_FIX}, which gives MediaPipe's "
                f"{NUM_BLENDSHAPES}.")
        blendshapes = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
        for name, score in scores.items():
            if isinstance(score, bool) or not isinstance(score, (int, float, np.floating)) or not 0.0 <= score <= 1.0:
                raise _core_error(at, f"blendshape {name} is {score!r:.30}, not a score in 0..1")
            blendshapes[BLENDSHAPE_INDEX[name]] = score
        if face.get("transformation_matrix") is None:
            raise _core_error(at, "has no transformation_matrix for the head pose")
        matrix = _core_array(face, "transformation_matrix", (4, 4), at)
        if np.any(np.linalg.norm(matrix[:3, :3], axis=0) == 0):
            raise _core_error(at, "its transformation_matrix has no rotation (a zero column)")
        xy = _core_array(face, "landmarks_xy", (NUM_LANDMARKS, 2), at).astype(np.float32)
        depth = _core_array(face, "landmarks_3d", (NUM_LANDMARKS, 3), at)[:, 2].astype(np.float32)
        presence = face.get("presence")
        if isinstance(presence, bool) or not isinstance(presence, (int, float, np.floating)) or not np.isfinite(presence):
            raise _core_error(at, f"its presence is {presence!r:.30}, not a number")
        face_width = float(np.ptp(xy[:, 0]))
        if face_width == 0 or float(np.ptp(xy[:, 1])) == 0:  # every later measure divides by the face's size
            raise _core_error(at, "its landmarks_xy lie on one line or point (no face spans them)")
        landmarks = np.stack([xy[:, 0] / width, xy[:, 1] / height,
                              depth / CORE_CANONICAL * face_width / width], axis=1).astype(np.float32)
        converted.append({
            "blendshapes": blendshapes,
            "landmarks": landmarks,
            "head_pose": head_pose_degrees(matrix),
            "presence": 0.5 * (1.0 + math.tanh(float(presence) / 2)),  # core gives the logit: its sigmoid
        })
    return converted


def face_order(faces: list[dict], order: str) -> list[int]:
    """Indices of ``faces`` (from :func:`faces_from_result`) in the identity nodes' orders.

    The landmarker gives no per-face detection score, so "highest score" ranks by the mean landmark
    presence when MediaPipe reports it, and otherwise falls back to the largest face.
    """
    areas = [float(np.ptp(f["landmarks"][:, 0]) * np.ptp(f["landmarks"][:, 1])) for f in faces]
    by_area = sorted(range(len(faces)), key=lambda i: -areas[i])
    if order == "largest":
        return by_area
    if order == "left to right":
        return sorted(range(len(faces)), key=lambda i: float(faces[i]["landmarks"][:, 0].mean()))
    if order == "highest score":
        if all(f["presence"] is not None for f in faces):
            return sorted(range(len(faces)), key=lambda i: -faces[i]["presence"])
        return by_area
    raise GenAffectInputError(f"unknown face order {order!r}.")
