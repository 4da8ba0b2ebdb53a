"""Face analyzer loading and identity extraction nodes (category GenAffect/face)."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..models.drawing.pictures import draw_detections
from ..models.errors import GenAffectInputError, ModelFileError
from ..models.face import face_align, face_analyzer, face_choice, identity
from ..models.files import insightface_packs, onnx_providers
from ..models.images import image_batch_to_rgb_uint8, rgb_uint8_to_image_batch
from . import comfy_host, sockets

log = logging.getLogger(__name__)

PACK_DEFAULT = "pack default"
ARC2FACE = "arcface.onnx (Arc2Face)"


class GenAffectFaceAnalyzerLoader:
    DESCRIPTION = (
        "Loads an insightface model pack (face detector + ArcFace recognizer) from "
        "models/insightface/models/<pack>/. Choose Arc2Face's arcface.onnx as the recognizer when the "
        "identity feeds Arc2Face. The 'info' output tells which execution providers are really in use."
    )
    CATEGORY = "GenAffect/face"
    FUNCTION = "load"
    RETURN_TYPES = (sockets.FACE_ANALYZER, "STRING")
    RETURN_NAMES = ("face_analyzer", "info")
    OUTPUT_TOOLTIPS = ("The loaded detector and recognizer.", "Files loaded and the providers each runs on.")

    @classmethod
    def INPUT_TYPES(cls):
        packs = insightface_packs.pack_choices(comfy_host.model_roots("insightface"))
        return {
            "required": {
                "pack": (packs, {"tooltip": "insightface pack folder under models/insightface/models/. "
                                            "antelopev2 is what Arc2Face uses; buffalo_l also works."}),
                "recognition": ([PACK_DEFAULT, ARC2FACE], {
                    "tooltip": "'pack default' uses the pack's own ArcFace model (glintr100 in antelopev2). "
                               "Arc2Face needs its own arcface.onnx, from models/arc2face/ or the pack folder."}),
                "provider": (list(onnx_providers.PROVIDER_CHOICES), {
                    "tooltip": "Where ONNX Runtime runs the models. auto: CUDA if available, else CoreML (Mac), "
                               "else CPU. CUDA needs onnxruntime-gpu (see docs/install.md)."}),
                "detection_size": ("INT", {"default": 640, "min": 160, "max": 2048, "step": 32,
                                           "tooltip": "Detector input size in pixels. Larger finds smaller faces, slower."}),
                "detection_threshold": ("FLOAT", {"default": 0.5, "min": 0.05, "max": 0.99, "step": 0.01,
                                                  "tooltip": "Minimum detector confidence for a face to count."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, pack, recognition):
        """Before a run: the pack is there and, for Arc2Face, its arcface.onnx (ComfyUI then lists all at once)."""
        roots = comfy_host.model_roots("insightface")
        found = insightface_packs.find_packs(roots).get(pack)

        def recognizer():
            if recognition == ARC2FACE:  # searched beside the pack only when the pack is there
                face_analyzer.require_arc2face_recognizer(found or roots[0], comfy_host.model_roots("arc2face"))

        return comfy_host.validation_answer(lambda: _recognition(recognition),
                                            lambda: insightface_packs.locate_pack(pack, roots), recognizer)

    @classmethod
    def IS_CHANGED(cls, pack, recognition, **_):
        try:
            pack_dir = insightface_packs.locate_pack(pack, comfy_host.model_roots("insightface"))
        except ModelFileError:
            return f"{pack}: missing"  # load() explains
        recognizers = [os.path.join(root, face_analyzer.ARC2FACE_RECOGNIZER)
                       for root in comfy_host.model_roots("arc2face")]
        return comfy_host.file_identity(*insightface_packs.onnx_files(pack_dir),
                                        *(recognizers if recognition == ARC2FACE else []))

    def load(self, pack, recognition, provider, detection_size, detection_threshold):
        pack_dir = _pack_and_recognizer(pack, recognition)
        analyzer = face_analyzer.load_face_analyzer(
            pack,
            pack_dir,
            onnx_providers.choose_providers(provider),
            use_arc2face_recognizer=recognition == ARC2FACE,
            arc2face_roots=comfy_host.model_roots("arc2face"),
            det_size=detection_size,
            det_threshold=detection_threshold,
        )
        info = analyzer.describe()
        log.info("GenAffect face analyzer:\n%s", info)
        return (analyzer, info)


def _recognition(recognition: str) -> None:
    if recognition not in (PACK_DEFAULT, ARC2FACE):
        raise GenAffectInputError(f"recognition {recognition!r:.60} is not one of {PACK_DEFAULT!r}, {ARC2FACE!r}.")


def _pack_and_recognizer(pack: str, recognition: str) -> str:
    """The pack's folder; the pack missing, or Arc2Face's arcface.onnx when it is asked for, raises with the fix."""
    _recognition(recognition)
    pack_dir = insightface_packs.locate_pack(pack, comfy_host.model_roots("insightface"))
    if recognition == ARC2FACE:
        face_analyzer.require_arc2face_recognizer(pack_dir, comfy_host.model_roots("arc2face"))
    return pack_dir


class GenAffectExtractIdentity:
    DESCRIPTION = (
        "Finds the face in each reference photo and averages their ArcFace embeddings into one identity. "
        "Photos without a face are skipped with a warning; a reference that looks like another person is "
        "flagged in the report. Outputs the aligned crops the recognizer saw and a preview with detections."
    )
    CATEGORY = "GenAffect/face"
    FUNCTION = "extract"
    RETURN_TYPES = (sockets.IDENTITY, "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("identity", "face_crops", "preview", "report")
    OUTPUT_TOOLTIPS = (
        "Identity: per-reference faces and embeddings plus their normalised mean.",
        "Aligned face crops (112x112), one per reference that had a face.",
        "Each reference with boxes, 5 keypoints and scores; the face used is green.",
        "Cosine of each reference to the identity, and which references were skipped or flagged.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "face_analyzer": (sockets.FACE_ANALYZER, {"tooltip": "From GenAffect Face Analyzer Loader."}),
                "images": ("IMAGE", {"tooltip": "One or more reference photos of the same person (a batch)."}),
                "face_order": (list(face_choice.FACE_ORDERS), {
                    "tooltip": "How faces in one photo are ordered before face_index picks one: by box area, "
                               "by detector confidence, or by position from the left."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 63,
                                       "tooltip": "Which face to use in the chosen order (0 = first)."}),
                "on_no_face": (list(face_choice.NO_FACE_POLICIES), {
                    "tooltip": "skip: leave out references without a face (with a warning); error: stop. "
                               "No face in any reference is always an error."}),
            },
            "optional": {
                "outlier_threshold": ("FLOAT", {"default": identity.DEFAULT_OUTLIER_THRESHOLD, "min": -1.0,
                                                "max": 1.0, "step": 0.01,
                                                "tooltip": "A reference whose cosine to the mean of the others is "
                                                           "below this is flagged as a different person."}),
                "drop_outliers": ("BOOLEAN", {"default": False,
                                              "tooltip": "Leave flagged references out of the identity."}),
            },
        }

    def extract(self, face_analyzer, images, face_order, face_index, on_no_face,
                outlier_threshold=identity.DEFAULT_OUTLIER_THRESHOLD, drop_outliers=False):
        frames = image_batch_to_rgb_uint8(images, what="Extract Identity images")
        on_progress = comfy_host.progress_callback(len(frames))

        result, detections = identity.extract_identity(
            face_analyzer,
            frames,
            face_order=face_order,
            face_index=face_index,
            on_no_face=on_no_face,
            outlier_threshold=outlier_threshold,
            drop_outliers=drop_outliers,
            on_progress=on_progress,
        )
        crops = rgb_uint8_to_image_batch([ref.crop_rgb for ref in result.references])
        preview = rgb_uint8_to_image_batch(_previews(frames, detections, result))
        report = result.report()
        log.info("GenAffect %s", report)
        return (result, crops, preview, report)


class GenAffectAlignFace:
    DESCRIPTION = (
        "Crops and rotates the face of each photo FFHQ-style (eyes level, the face centred as in FFHQ and Arc2Face's "
        "training data). Feed the result to GenAffect Apply Reference Adapter, and to Extract Identity so both see "
        "the same crop. Photos without a face are skipped with a warning."
    )
    CATEGORY = "GenAffect/face"
    FUNCTION = "align"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("aligned", "report")
    OUTPUT_TOOLTIPS = ("One aligned square image per photo with a face.", "Which photos were skipped and why.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "face_analyzer": (sockets.FACE_ANALYZER, {"tooltip": "From GenAffect Face Analyzer Loader (its detector "
                                                                  "finds the eyes and mouth corners)."}),
                "images": ("IMAGE", {"tooltip": "Photos with a face."}),
                "size": ("INT", {"default": face_align.ALIGNED_SIZE, "min": 64, "max": 2048, "step": 8,
                                 "tooltip": "Output side in pixels; Arc2Face works at 512."}),
                "face_order": (list(face_choice.FACE_ORDERS), {
                    "tooltip": "How faces in one photo are ordered before face_index picks one."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 63,
                                       "tooltip": "Which face to use in the chosen order (0 = first)."}),
                "on_no_face": (list(face_choice.NO_FACE_POLICIES), {
                    "tooltip": "skip: leave out photos without a face (with a warning); error: stop."}),
            },
        }

    def align(self, face_analyzer, images, size, face_order, face_index, on_no_face):
        frames = image_batch_to_rgb_uint8(images, what="Align Face images")
        retried = []
        aligned, skipped = face_align.align_photos(
            face_analyzer, frames, face_order=face_order, face_index=face_index, on_no_face=on_no_face, size=size,
            on_progress=comfy_host.progress_callback(len(frames)), retried=retried)
        report = f"aligned {len(aligned)} of {len(frames)} photo(s) to {size}x{size}"
        if skipped:
            report += "; skipped " + face_choice.describe_skipped(skipped)
        if retried:
            report += "; " + face_choice.describe_retried(retried)
        return (rgb_uint8_to_image_batch(aligned), report)


def _previews(frames: list[np.ndarray], detections, result: identity.Identity) -> list[np.ndarray]:
    kept = {ref.image_index: ref for ref in result.references}
    skipped = {s.image_index: s.reason for s in result.skipped}
    pictures = []
    for index, (frame, found) in enumerate(zip(frames, detections)):
        comfy_host.check_interrupted()
        ref = kept.get(index)
        chosen = found[ref.detection_index] if ref is not None else None
        if ref is not None:
            caption = f"#{index} cos {ref.cosine_to_identity:.2f}" + (" OUTLIER" if ref.outlier else "")
        else:
            caption = f"#{index} skipped: {skipped.get(index, '')}"
        pictures.append(draw_detections(frame, found, chosen, caption))
    return pictures
