"""FFHQ-style face alignment (the crop Arc2Face's Reference Adapter was trained on).

FFHQ's recipe (NVlabs/ffhq-dataset, used by Arc2Face's ``image_align``) builds an oriented square from
the eye centres and mouth corners of 68 dlib landmarks. The detector's 5 keypoints are those same
points (eye centres, mouth corners), so the square is computed from them directly. Differences from
the recipe: borders are mirrored without FFHQ's blur (they are rarely inside the square for a normal
portrait), and one affine warp replaces its 4096-pixel quad transform.
"""

from __future__ import annotations

import numpy as np

from ..errors import GenAffectInputError, NoFaceFoundError, checked_number
from ..images import rgb_to_bgr
from .face_choice import RetriedImage, SkippedImage, describe_skipped, faces_per_image
from .identity import ordered_faces

ALIGNED_SIZE = 512  # Arc2Face's resolution
MAX_ALIGNED_SIZE = 4096  # an aligned face larger than this is a typo, and would need gigabytes


def ffhq_square(keypoints: np.ndarray) -> np.ndarray:
    """The oriented square to crop, as its corners (upper-left, lower-left, lower-right, upper-right).

    ``keypoints`` are insightface's 5 points: the eye on the image's left, the other eye, nose, the
    mouth corner on the image's left, the other corner.
    """
    points = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise GenAffectInputError(f"FFHQ alignment needs 5 finite face keypoints; got {points.shape[0]} points.")
    eye_left, eye_right, _, mouth_left, mouth_right = points
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) * 0.5 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    length = np.hypot(*x)
    if length == 0:
        raise GenAffectInputError("the face keypoints coincide; the detection is not usable for alignment.")
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / length
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def square_to_output(square: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 affine matrix taking image pixels onto the ``size`` x ``size`` output.

    Pixel centres sit at integer coordinates in both images; the square's edge spans the output's
    full width, from the outer edge of its first pixel to the outer edge of its last.
    """
    upper_left, lower_left, _, upper_right = np.asarray(square, dtype=np.float32)
    edges = np.float32([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, -0.5]])
    import cv2  # lazily, like insightface: a broken OpenCV then breaks alignment only, not every node

    return cv2.getAffineTransform(np.float32([upper_left, lower_left, upper_right]), edges)


def align_ffhq(image_rgb: np.ndarray, keypoints: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The face of ``image_rgb`` (uint8 H x W x 3) cropped and rotated FFHQ-style to ``size`` x ``size``."""
    import cv2

    square = ffhq_square(keypoints)
    side = float(np.hypot(*(square[3] - square[0])))
    # Like FFHQ, shrink a large face first by a whole factor so the warp does not alias.
    shrink = int(np.floor(side / size * 0.5))
    if shrink > 1:
        height, width = image_rgb.shape[:2]
        image_rgb = cv2.resize(image_rgb, (max(1, round(width / shrink)), max(1, round(height / shrink))),
                               interpolation=cv2.INTER_AREA)
        square = square * [image_rgb.shape[1] / width, image_rgb.shape[0] / height]
    matrix = square_to_output(square, size)
    return cv2.warpAffine(image_rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def align_photos(analyzer, images_rgb: list[np.ndarray], *, face_order: str = "largest", face_index: int = 0,
                 on_no_face: str = "skip", size: int = ALIGNED_SIZE,
                 on_progress=None, retried: list[RetriedImage] | None = None
                 ) -> tuple[list[np.ndarray], list[SkippedImage]]:
    """Each photo's chosen face aligned FFHQ-style, and the photos skipped for want of a face (``retried``
    gets the photos whose face a detection retry found).

    ``analyzer`` is a GA_FACE_ANALYZER (only its detector runs). No face in any photo is an error.
    """
    size = checked_number("size", size, whole=True, low=16, high=MAX_ALIGNED_SIZE)
    aligned, skipped = [], []
    detect = lambda _, rgb: ordered_faces(analyzer, rgb_to_bgr(rgb), face_order)  # noqa: E731
    for index, detections, usable in faces_per_image(images_rgb, detect, face_index=face_index, face_order=face_order,
                                                     on_no_face=on_no_face, skipped=skipped, what="Photo",
                                                     on_progress=on_progress, retried=retried):
        if usable:
            aligned.append(align_ffhq(images_rgb[index], detections[face_index].keypoints, size))
    if not aligned:
        raise NoFaceFoundError(
            f"No face found in any of the {len(images_rgb)} photo(s) to align ({describe_skipped(skipped)}). Use "
            "a photo where the face is visible and at least ~64 px wide, or lower the face analyzer's threshold."
        )
    return aligned, skipped
