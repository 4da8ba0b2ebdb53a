"""MediaPipe FaceLandmarker results built by hand with MediaPipe's own classes, and a landmarker
double that returns them for the faces painted by tiny_insightface.paint_face.

The real FaceLandmarker needs the user-downloaded face_landmarker.task, which tests cannot have; the
double stands in for that model only, so the code around it (conversion, face choice, cropping,
SMIRK, previews, nodes) runs for real.
"""

from __future__ import annotations

import numpy as np
import pytest
from genaffect.models.expression.batch import BLENDSHAPE_NAMES
from genaffect.models.expression.face_landmarks import rotation_from_degrees
from tiny_insightface import MAX_HALF, MIN_HALF

vision = pytest.importorskip("mediapipe.tasks.python.vision", reason="mediapipe is not installed")
from mediapipe.tasks.python.components.containers.category import Category  # noqa: E402
from mediapipe.tasks.python.components.containers.landmark import NormalizedLandmark  # noqa: E402


def make_face(centre_x, size, scores=None, yaw=0.0, pitch=0.0, roll=0.0, presence=None, shuffled=False, centre_y=0.5,
              shape=None):
    """One face: 478 landmarks spread over a square of side ``size`` (normalised units) at the centre, or ``shape``
    - real landmarks (478, 3) of a face, normalised to a square photo - scaled and moved there."""
    rng = np.random.default_rng(int(centre_x * 1000))
    if shape is None:
        points = rng.uniform(-0.5, 0.5, size=(478, 3)) * [size, size, 0.1] + [centre_x, centre_y, 0.0]
    else:
        shape = np.asarray(shape, dtype=np.float64)
        span = float(np.ptp(shape[:, 0]))
        points = (shape - [shape[:, 0].mean(), shape[:, 1].mean(), 0.0]) * (size / span) + [centre_x, centre_y, 0.0]
    landmarks = [NormalizedLandmark(x=float(x), y=float(y), z=float(z), presence=presence) for x, y, z in points]
    scores = scores if scores is not None else np.linspace(0, 1, len(BLENDSHAPE_NAMES))
    categories = [Category(index=i, score=float(s), category_name=n) for i, (n, s) in enumerate(zip(BLENDSHAPE_NAMES, scores))]
    if shuffled:
        categories = categories[::-1]
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_from_degrees(yaw, pitch, roll) * 1.7  # MediaPipe matrices may carry scale
    matrix[:3, 3] = [1.0, -2.0, -40.0]
    return landmarks, categories, matrix


def make_result(*faces):
    return vision.FaceLandmarkerResult(
        face_landmarks=[f[0] for f in faces],
        face_blendshapes=[f[1] for f in faces],
        facial_transformation_matrixes=[f[2] for f in faces],
    )


def painted_markers(image: np.ndarray) -> list[tuple[int, int, float]]:
    """(cx, cy, half) of every face marker paint_face left in an RGB image."""
    red = image[..., 0] == 255
    corners = red & ~np.roll(red, 1, axis=0) & ~np.roll(red, 1, axis=1)
    markers = []
    for y, x in zip(*np.nonzero(corners)):
        g_norm = (float(image[y, x, 1]) - 127.5) / 128.0
        markers.append((int(x) + 4, int(y) + 4, MIN_HALF + (g_norm + 1.0) / 2.0 * (MAX_HALF - MIN_HALF)))
    return markers


class MarkerLandmarker:
    """Stands in for MediaPipe's FaceLandmarker: a face wherever paint_face painted one.

    Blendshape scores come from ``scores`` in call order (cycled), or a fixed ramp; ``yaw`` sets the
    head pose of every face.
    """

    def __init__(self, scores: list[np.ndarray] | None = None, yaw: float = 0.0,
                 shapes: list[np.ndarray] | None = None):
        self.scores = scores
        self.shapes = shapes  # real landmark arrays (478, 3) to give the faces, in call order (cycled)
        self.yaw = yaw
        self.calls = 0
        self.closed = False

    def detect(self, mp_image):
        image = mp_image.numpy_view()
        assert image.dtype == np.uint8 and image.shape[2] == 3, "the landmarker gets RGB uint8"
        height, width = image.shape[:2]
        scores = None if self.scores is None else self.scores[self.calls % len(self.scores)]
        shape = None if self.shapes is None else self.shapes[self.calls % len(self.shapes)]
        self.calls += 1
        faces = [
            make_face(cx / width, 2 * half / width, scores, yaw=self.yaw, centre_y=cy / height, shape=shape)
            for cx, cy, half in painted_markers(image)
        ]
        return make_result(*faces)

    def close(self):
        self.closed = True


def core_face(landmarks, categories, matrix, width: int, height: int, presence_logit: float = 2.0) -> dict:
    """The same face as ComfyUI core's MediaPipe Face Landmarker node gives it (comfy_extras/mediapipe,
    detect_batch): blendshapes by name, landmarks_xy in pixels, landmarks_3d in its 192-pixel crop's units
    (depth chosen so that GenAffect's conversion gives back MediaPipe's z), the presence logit, the matrix."""
    points = np.array([(p.x, p.y, p.z) for p in landmarks], dtype=np.float32)
    xy = points[:, :2] * [width, height]
    face_width = float(np.ptp(xy[:, 0]))
    depth = points[:, 2] * width / face_width * 192
    canonical = np.concatenate([xy, depth[:, None]], axis=1).astype(np.float32)  # x, y unused by GenAffect
    return {"bbox_xyxy": np.array([*xy.min(0), *xy.max(0)], dtype=np.float32),
            "blendshapes": {c.category_name: c.score for c in categories},
            "landmarks_xy": xy.astype(np.float32), "landmarks_3d": canonical, "presence": presence_logit,
            "score": 0.9, "transformation_matrix": matrix}


def core_landmarks(landmarker: MarkerLandmarker, images: list[np.ndarray]) -> dict:
    """FACE_LANDMARKS for ``images``: the faces ``landmarker`` finds, as core's node would describe them."""
    import mediapipe as mp

    frames = []
    for image in images:
        result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
        height, width = image.shape[:2]
        frames.append([core_face(lm, cat, np.asarray(m), width, height) for lm, cat, m in
                       zip(result.face_landmarks, result.face_blendshapes, result.facial_transformation_matrixes)])
    return {"frames": frames, "image_size": images[0].shape[:2], "connection_sets": {}}
