"""Expression estimation on photos (category GenAffect/expression)."""

from __future__ import annotations

import logging
import os

from ..models.drawing.pictures import draw_expression_preview, expression_preview_shape, preview_photo, preview_size
from ..models.errors import ModelFileError
from ..models.expression import expression_estimator, smirk_encoder
from ..models.expression.batch import BLENDSHAPE_NAMES, split_list
from ..models.face import face_choice
from ..models.files.model_catalog import catalog_entry
from ..models.images import image_batch_as_made, image_batch_to_rgb_uint8
from . import comfy_host, sockets

log = logging.getLogger(__name__)

LANDMARKER_FILE = "face_landmarker.task"
TASK_EXTENSIONS = (".task",)
SMIRK_EXTENSIONS = (".pt", ".pth", ".safetensors")
NO_SMIRK = "none (no FLAME-55)"
SMIRK_ENTRY = catalog_entry("SMIRK_em1.pt")


def _converted_name(path: str) -> str:
    return os.path.splitext(path)[0] + "_expression_encoder.safetensors"


class GenAffectExpressionEstimatorLoader:
    DESCRIPTION = (
        "Loads MediaPipe's face landmarker (52 blendshapes, 478 landmarks, head pose) from models/mediapipe/ and, "
        "optionally, SMIRK's expression encoder from models/smirk/ for FLAME-55 vectors (what Arc2Face's "
        "Expression Adapter takes)."
    )
    CATEGORY = "GenAffect/expression"
    FUNCTION = "load"
    RETURN_TYPES = (sockets.EXPRESSION_ESTIMATOR, "STRING")
    RETURN_NAMES = ("estimator", "info")
    OUTPUT_TOOLTIPS = ("MediaPipe (+ SMIRK) ready to estimate expressions.", "Files loaded and where SMIRK runs.")

    @classmethod
    def INPUT_TYPES(cls):
        tasks = comfy_host.list_model_files("mediapipe", TASK_EXTENSIONS)
        smirk = comfy_host.list_model_files("smirk", SMIRK_EXTENSIONS)
        return {
            "required": {
                "landmarker": (tasks if LANDMARKER_FILE in tasks else [LANDMARKER_FILE] + tasks, {
                    "tooltip": "MediaPipe face_landmarker.task in models/mediapipe/ (3.7 MB, Apache-2.0)."}),
                "smirk": ([NO_SMIRK] + smirk, {
                    "tooltip": "SMIRK_em1.pt (or its safetensors conversion) in models/smirk/, for FLAME-55. "
                               "Without it expressions carry blendshapes only."}),
                "max_faces": ("INT", {"default": expression_estimator.DEFAULT_MAX_FACES, "min": 1, "max": 16,
                                      "tooltip": "Most faces MediaPipe looks for in one image (face_index picks one)."}),
                "min_confidence": ("FLOAT", {"default": 0.5, "min": 0.05, "max": 0.99, "step": 0.01,
                                             "tooltip": "Minimum face detection and presence confidence."}),
            },
            "optional": {
                "convert_smirk_to_safetensors": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Also write the SMIRK encoder as <name>_expression_encoder.safetensors next to the "
                               ".pt (12 MB, no pickle); choose that file from then on."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, landmarker, smirk):
        """Before a run: both files are there (ComfyUI then lists every missing file of the workflow at once)."""
        return comfy_host.validation_answer(lambda: _landmarker_path(landmarker), lambda: _smirk_path(smirk))

    @classmethod
    def IS_CHANGED(cls, landmarker, smirk, **_):
        return comfy_host.file_identity(comfy_host.model_file_path("mediapipe", landmarker, TASK_EXTENSIONS),
                                        comfy_host.model_file_path("smirk", smirk, SMIRK_EXTENSIONS))

    def load(self, landmarker, smirk, max_faces, min_confidence, convert_smirk_to_safetensors=False):
        task_path, smirk_path = _landmarker_path(landmarker), _smirk_path(smirk)
        estimator = expression_estimator.load_estimator(
            task_path, smirk_path, comfy_host.torch_device(), max_faces=max_faces, min_confidence=min_confidence
        )
        info = estimator.describe()
        if smirk_path and convert_smirk_to_safetensors and not smirk_path.endswith(".safetensors"):
            target = _converted_name(smirk_path)
            if not os.path.exists(target):
                smirk_encoder.convert_to_safetensors(smirk_path, target)
            info += f"\nsafetensors copy: {target}"
        log.info("GenAffect expression estimator:\n%s", info)
        return (estimator, info)


def _landmarker_path(landmarker: str) -> str:
    task_path = comfy_host.model_file_path("mediapipe", landmarker, TASK_EXTENSIONS)
    if task_path is None:
        entry = expression_estimator.LANDMARKER_ENTRY
        raise ModelFileError(
            f"{landmarker} is not in models/mediapipe/ ({', '.join(comfy_host.model_roots('mediapipe'))}). "
            f"Download {entry.url} ({entry.size_mb} MB) into that folder, then press R in ComfyUI to refresh."
        )
    return task_path


def _smirk_path(smirk: str) -> str | None:
    if smirk == NO_SMIRK:
        return None
    smirk_path = comfy_host.model_file_path("smirk", smirk, SMIRK_EXTENSIONS)
    if smirk_path is None:
        raise ModelFileError(
            f"{smirk} is not in models/smirk/ ({', '.join(comfy_host.model_roots('smirk'))}). "
            f"Get SMIRK_em1.pt from {SMIRK_ENTRY.url} and put it there, or choose '{NO_SMIRK}'."
        )
    return smirk_path


class GenAffectEstimateExpression:
    DESCRIPTION = (
        "Measures the expression of the face in each image: 52 MediaPipe blendshapes, head yaw/pitch/roll, "
        "478 landmarks, and FLAME-55 when SMIRK is loaded. The faces come from the estimator's MediaPipe, or from "
        "ComfyUI core's MediaPipe Face Landmarker (face_landmarks), which needs no mediapipe wheel. Images without a face are skipped with a warning "
        "(or stop the run, by option). The preview shows the landmarks and the strongest blendshapes."
    )
    CATEGORY = "GenAffect/expression"
    FUNCTION = "estimate"
    RETURN_TYPES = (sockets.EXPRESSION, "IMAGE", "STRING")
    RETURN_NAMES = ("expression", "preview", "report")
    OUTPUT_TOOLTIPS = (
        "One expression per image with a face, labelled (skipped images leave no row).",
        "Each image with the face's landmarks and a chart of its strongest blendshapes.",
        "Per image: faces found, head pose, or why it was skipped.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Photos or video frames (a batch)."}),
                "face_order": (list(face_choice.FACE_ORDERS), {
                    "tooltip": "How faces in one image are ordered before face_index picks one."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 15,
                                       "tooltip": "Which face to use in the chosen order (0 = first)."}),
                "on_no_face": (list(face_choice.NO_FACE_POLICIES), {
                    "tooltip": "skip: leave images without a face out (with a warning); error: stop. "
                               "No face in any image is always an error."}),
            },
            "optional": {
                "estimator": (sockets.EXPRESSION_ESTIMATOR, {
                    "tooltip": "From GenAffect Expression Estimator Loader (MediaPipe, and SMIRK for FLAME-55)."}),
                "face_landmarks": ("FACE_LANDMARKS", {
                    "tooltip": "From ComfyUI's MediaPipe Face Landmarker on the same images: used instead of the "
                               "estimator's MediaPipe (an estimator with SMIRK still adds FLAME-55)."}),
                "labels": ("STRING", {"default": "", "multiline": True,
                                      "tooltip": "One label per image, separated by commas or new lines. "
                                                 "Empty: 'image 0', 'image 1', ..."}),
                "draw_preview": ("BOOLEAN", {"default": True,
                                             "tooltip": "On: each photo with its landmarks and strongest "
                                                        "blendshapes (a photo over 1024 px is shown scaled down by "
                                                        "a whole factor to at most 1024 on its longer side). Off: "
                                                        "the preview output passes the images through undrawn, "
                                                        "which saves time on long videos."}),
            },
        }

    def estimate(self, images, face_order, face_index, on_no_face, estimator=None, face_landmarks=None, labels="",
                 draw_preview=True):
        frames = image_batch_to_rgb_uint8(images, what="Estimate Expression images")
        on_progress = comfy_host.progress_callback(len(frames))

        estimation = expression_estimator.estimate_expressions(
            estimator, frames, split_list(labels) or None,
            face_order=face_order, face_index=face_index, on_no_face=on_no_face, on_progress=on_progress,
            core_landmarks=face_landmarks,
        )
        preview = _previews(frames, estimation) if draw_preview else images
        report = estimation.report()
        log.info("GenAffect %s", report)
        return (estimation.expression, preview, report)


def _previews(frames, estimation: expression_estimator.Estimation):
    rows = {index: row for row, index in enumerate(estimation.image_indices)}
    reasons = {s.image_index: s.reason for s in estimation.skipped}
    batch = estimation.expression
    shape = expression_preview_shape(preview_size(frames[0].shape))  # a batch's frames are one size

    def drawn():
        canvas = None  # the first picture, drawn over for each next one: each is in the IMAGE before the next is drawn
        for index, frame in enumerate(frames):
            comfy_host.check_interrupted()  # a long video's previews take a while
            row, frame = rows.get(index), preview_photo(frame)
            if row is None:
                canvas = draw_expression_preview(frame, None, None, BLENDSHAPE_NAMES, f"#{index} skipped: {reasons[index]}",
                                                 out=canvas)
            else:
                canvas = draw_expression_preview(frame, batch.landmarks[row], batch.blendshapes[row], BLENDSHAPE_NAMES,
                                                 f"#{index} {batch.labels[row]}", out=canvas)
            yield canvas

    return image_batch_as_made(len(frames), shape, drawn())
