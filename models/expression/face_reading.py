"""The expression, pose and landmarks of faces the face analyzer found, read on a crop around each.

MediaPipe's own face detector is a short-range one: in a group photo or a wide video frame it misses small faces
and finds at most ``max_faces``. Reading each face the analyzer found on its own enlarged crop avoids both; the
landmarks are carried back into the whole image's normalised coordinates (x and y by the crop's geometry, z
scaled like x, as MediaPipe gives it).
"""

from __future__ import annotations

import numpy as np

from ..errors import NoFaceFoundError
from ..face.face_crops import crop_image, upright_matrix
from .expression_estimator import ExpressionEstimator, estimate_expressions

READ_CONTEXT = 2.0  # crop side over the face box's side: the landmarker's detector wants the whole head in view
READ_SIZE = 384  # crop side in pixels (MediaPipe's landmarker itself works at 256)


def read_faces(estimator: ExpressionEstimator, images_rgb: list[np.ndarray],
               faces: list[tuple[int, np.ndarray]]) -> list[dict | None]:
    """For each ``(image index, box)``: ``{"blendshapes", "head_pose", "landmarks", "flame"}`` read on a crop around
    the box (landmarks normalised to the whole image), or None where the landmarker finds no face there."""
    if not faces:
        return []
    crops, geometry = [], []
    for image_index, box in faces:
        rgb = images_rgb[image_index]
        matrix = upright_matrix(box, READ_CONTEXT, READ_SIZE)
        pixels = crop_image(rgb.astype(np.float32) / 255.0, matrix, READ_SIZE)
        crops.append(np.round(pixels * 255.0).astype(np.uint8))
        geometry.append((matrix, rgb.shape[1], rgb.shape[0]))
    try:
        estimation = estimate_expressions(estimator, crops, on_no_face="skip")
    except NoFaceFoundError:
        return [None] * len(faces)
    found = estimation.expression
    readings: list[dict | None] = [None] * len(faces)
    for row, index in enumerate(estimation.image_indices):
        matrix, width, height = geometry[index]
        readings[index] = {
            "blendshapes": found.blendshapes[row],
            "head_pose": found.head_pose[row],
            "landmarks": landmarks_in_image(found.landmarks[row], matrix, READ_SIZE, width, height),
            "flame": None if found.flame is None else found.flame[row],
        }
    return readings


def landmarks_in_image(landmarks: np.ndarray, matrix: np.ndarray, crop_size: int, width: int,
                       height: int) -> np.ndarray:
    """(478, 3) landmarks normalised to a crop -> normalised to the image the crop was cut from (``matrix``: image
    pixels -> crop pixels, pixel centres at integers)."""
    points = np.asarray(landmarks, np.float64)
    crop_pixels = points[:, :2] * crop_size - 0.5
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    image_pixels = crop_pixels @ inverse[:, :2].T + inverse[:, 2]
    scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))  # image pixels per crop pixel
    out = np.empty_like(points)
    out[:, 0] = (image_pixels[:, 0] + 0.5) / width
    out[:, 1] = (image_pixels[:, 1] + 0.5) / height
    out[:, 2] = points[:, 2] * crop_size * scale / width
    return out.astype(np.float32)
