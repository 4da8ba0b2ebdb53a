"""Expression estimation on photos: MediaPipe FaceLandmarker, plus SMIRK's encoder for FLAME-55.

MediaPipe gives 52 blendshapes, 478 landmarks and a pose matrix per face; SMIRK, when loaded, reads
a crop placed by those landmarks and gives the FLAME-55 vector Arc2Face's Expression Adapter takes.
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import GenAffectInputError, ModelFileError, NoFaceFoundError
from ..face.face_choice import RetriedImage, SkippedImage, describe_skipped, faces_per_image
from ..files.model_catalog import catalog_entry
from . import face_landmarks, smirk_encoder
from .batch import ExpressionBatch

log = logging.getLogger(__name__)

DEFAULT_MAX_FACES = 4
SMIRK_CHUNK = 32  # crops per SMIRK batch
LANDMARKER_ENTRY = catalog_entry("face_landmarker.task")


def to_mediapipe_image(image_rgb: np.ndarray):
    """A MediaPipe Image from an (H, W, 3) RGB uint8 array (MediaPipe takes BGR silently, with wrong colours)."""
    import mediapipe as mp

    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise GenAffectInputError(f"MediaPipe needs an RGB uint8 image, got {image_rgb.dtype} {image_rgb.shape}.")
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image_rgb))


NO_MEDIAPIPE = (
    "the mediapipe package is not installed (it is optional: it has no wheel for every Python version). Install "
    "it with ComfyUI's Python (python -m pip install mediapipe), or give Estimate Expression the faces of ComfyUI's "
    "own MediaPipe Face Landmarker node (its face_landmarks input), which needs no mediapipe package."
)


def create_face_landmarker(path: str, max_faces: int = DEFAULT_MAX_FACES, min_confidence: float = 0.5):
    """MediaPipe's FaceLandmarker (image mode) with blendshapes and pose matrices on.

    The model is passed as bytes, not as a path: MediaPipe cannot open paths with non-ASCII
    characters on Windows.
    """
    try:
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as error:
        raise GenAffectInputError(NO_MEDIAPIPE) from error

    if not os.path.isfile(path):
        raise ModelFileError(
            f"MediaPipe face landmarker not found at {path}. Download {LANDMARKER_ENTRY.url} "
            f"({LANDMARKER_ENTRY.size_mb} MB) into models/{LANDMARKER_ENTRY.folder}/."
        )
    with open(path, "rb") as handle:
        model = handle.read()
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_buffer=model),
        running_mode=vision.RunningMode.IMAGE,
        num_faces=max_faces,
        min_face_detection_confidence=min_confidence,
        min_face_presence_confidence=min_confidence,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )
    try:
        landmarker = vision.FaceLandmarker.create_from_options(options)
    except (RuntimeError, ValueError, FileNotFoundError) as error:  # FileNotFoundError: a zip without its models
        raise ModelFileError(
            f"{path} is not a usable MediaPipe face landmarker ({error}). Download face_landmarker.task again "
            f"from {LANDMARKER_ENTRY.url}."
        ) from error
    _open_landmarkers.add(landmarker)
    return landmarker


# MediaPipe closes a landmarker in __del__, which fails noisily once the interpreter is shutting down;
# closing the live ones at exit, while everything still works, keeps ComfyUI's exit quiet.
_open_landmarkers: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_landmarkers() -> None:
    for landmarker in list(_open_landmarkers):
        landmarker.close()


class ExpressionEstimator:
    """The GA_EXPRESSION_ESTIMATOR socket: a face landmarker and, optionally, SMIRK's encoder.

    ``landmarker`` is anything with MediaPipe's ``detect(mp.Image) -> FaceLandmarkerResult``.
    """

    def __init__(self, landmarker, landmarker_file: str, smirk: smirk_encoder.ExpressionEncoder | None = None,
                 smirk_file: str = ""):
        self.landmarker = landmarker
        self.landmarker_file = landmarker_file
        self.smirk = smirk
        self.smirk_file = smirk_file

    @property
    def has_flame(self) -> bool:
        return self.smirk is not None

    def describe(self) -> str:
        lines = [f"blendshapes, landmarks, head pose: MediaPipe FaceLandmarker ({self.landmarker_file})"]
        if self.smirk is not None:
            device = next(self.smirk.parameters()).device
            lines.append(f"FLAME-55: SMIRK expression encoder ({self.smirk_file}) on {device}")
        else:
            lines.append("FLAME-55: off (no SMIRK weights chosen)")
        return "\n".join(lines)

    def close(self) -> None:
        close = getattr(self.landmarker, "close", None)
        if close is not None:
            close()


def load_estimator(landmarker_path: str, smirk_path: str | None = None, device: str | torch.device = "cpu",
                   max_faces: int = DEFAULT_MAX_FACES, min_confidence: float = 0.5) -> ExpressionEstimator:
    smirk = smirk_encoder.load_expression_encoder(smirk_path, device) if smirk_path else None
    landmarker = create_face_landmarker(landmarker_path, max_faces, min_confidence)
    return ExpressionEstimator(landmarker, landmarker_path, smirk, smirk_path or "")


@dataclass(eq=False)
class Estimation:
    """What estimate_expressions found: one expression per image with a face, and the images skipped."""

    expression: ExpressionBatch
    image_indices: list[int]  # the input image of each expression
    faces_in_image: list[int]
    skipped: list[SkippedImage] = field(default_factory=list)
    retried: list[RetriedImage] = field(default_factory=list)  # faces a detection retry found

    def report(self) -> str:
        lines = [f"{len(self.image_indices)} expression(s) estimated"
                 + (" with FLAME-55" if self.expression.flame is not None else " (no FLAME-55: SMIRK not loaded)")]
        for row, (index, faces) in enumerate(zip(self.image_indices, self.faces_in_image)):
            yaw, pitch, roll = self.expression.head_pose[row]
            lines.append(f"  image {index} '{self.expression.labels[row]}': {faces} face(s), "
                         f"yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f}")
        for skipped in self.skipped:
            lines.append(f"  image {skipped.image_index} skipped: {skipped.reason}")
        for retry in self.retried:
            lines.append(f"  image {retry.image_index}: face {retry.how}")
        return "\n".join(lines)


def estimate_expressions(
    estimator: ExpressionEstimator | None,
    images_rgb: list[np.ndarray],
    labels: list[str] | None = None,
    *,
    face_order: str = "largest",
    face_index: int = 0,
    on_no_face: str = "skip",
    on_progress=None,
    core_landmarks: dict | None = None,
) -> Estimation:
    """Estimate one expression per RGB uint8 image (the face chosen by order and index). The faces come from
    the estimator's MediaPipe landmarker, or from ComfyUI core's FACE_LANDMARKS for the same images
    (``core_landmarks``); SMIRK, when the estimator has it, adds FLAME-55 either way."""
    if core_landmarks is not None:
        core = face_landmarks.core_frames(core_landmarks, len(images_rgb))
    elif estimator is None:
        raise GenAffectInputError("connect an expression estimator (GenAffect Expression Estimator Loader) or "
                                  "face_landmarks from ComfyUI's MediaPipe Face Landmarker node.")
    if labels is not None and len(labels) not in (0, len(images_rgb)):
        raise GenAffectInputError(f"{len(labels)} labels given for {len(images_rgb)} images; give one per image or none.")
    found: list[tuple[int, dict, int]] = []
    skipped: list[SkippedImage] = []
    crops: list[torch.Tensor] = []  # waiting for SMIRK, encoded in chunks so long videos stay small
    flame_parts: list[np.ndarray] = []
    def detect(index, rgb):  # MediaPipe's faces (the wheel's or core's), in the chosen order
        how = ""
        if core_landmarks is not None:
            faces = face_landmarks.faces_from_core(core[index], rgb.shape[:2], f" frame {index}")
        else:
            faces, how = landmarker_faces(estimator.landmarker, rgb)
        return [faces[i] for i in face_landmarks.face_order(faces, face_order)], how

    retried: list[RetriedImage] = []
    for index, faces, usable in faces_per_image(images_rgb, detect, face_index=face_index, face_order=face_order,
                                                on_no_face=on_no_face, skipped=skipped, on_progress=on_progress,
                                                retried=retried):
        if usable:
            rgb, face = images_rgb[index], faces[face_index]
            found.append((index, face, len(faces)))
            if estimator is not None and estimator.smirk is not None:
                pixels = face["landmarks"][:, :2] * np.array([rgb.shape[1], rgb.shape[0]], dtype=np.float32)
                crops.append(smirk_encoder.warp_crop(rgb, smirk_encoder.crop_matrix(pixels)))
                if len(crops) == SMIRK_CHUNK:
                    flame_parts.append(smirk_encoder.encode(estimator.smirk, torch.stack(crops)))
                    crops = []
    if not found:
        raise NoFaceFoundError(
            f"No face found in any of the {len(images_rgb)} image(s) ({describe_skipped(skipped)}). Use photos where the "
            "face is visible and at least ~64 px wide, or lower the estimator's min_confidence."
        )
    if crops:
        flame_parts.append(smirk_encoder.encode(estimator.smirk, torch.stack(crops)))
    flame = np.concatenate(flame_parts) if flame_parts else None
    expression = ExpressionBatch(
        labels=[labels[i] if labels else f"image {i}" for i, _, _ in found],
        blendshapes=np.stack([face["blendshapes"] for _, face, _ in found]),
        flame=flame,
        head_pose=np.stack([face["head_pose"] for _, face, _ in found]),
        landmarks=np.stack([face["landmarks"] for _, face, _ in found]),
        image_size=np.array([images_rgb[i].shape[:2] for i, _, _ in found], dtype=np.float32),
    )
    return Estimation(expression, [i for i, _, _ in found], [n for _, _, n in found], skipped, retried)


RETRY_BORDER = 0.25  # of the longer side, edge-replicated: MediaPipe's detector misses some faces that touch the frame


def landmarker_faces(landmarker, rgb: np.ndarray) -> tuple[list[dict], str]:
    """MediaPipe's faces of one RGB photo, and how they were found: ``""`` on the photo as it is, else on a retry
    with an edge-replicated border (landmarks given back in the photo's own normalised coordinates)."""
    faces = face_landmarks.faces_from_result(landmarker.detect(to_mediapipe_image(rgb)))
    if faces:
        return faces, ""
    height, width = rgb.shape[:2]
    pad = int(round(RETRY_BORDER * max(height, width)))
    padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    faces = face_landmarks.faces_from_result(landmarker.detect(to_mediapipe_image(padded)))
    scale = np.array([padded.shape[1] / width, padded.shape[0] / height, padded.shape[1] / width], dtype=np.float32)
    shift = np.array([pad / width, pad / height, 0.0], dtype=np.float32)
    for face in faces:  # normalised in the padded photo -> normalised in the photo (z is scaled like x)
        face["landmarks"] = (face["landmarks"] * scale - shift).astype(np.float32)
    return faces, f"found on retry (with a {RETRY_BORDER:.0%} border)" if faces else ""
