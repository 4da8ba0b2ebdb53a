"""Arc2Face in ComfyUI: loader, identity conditioning, Expression Adapter (category GenAffect/sampling)."""

from __future__ import annotations

import logging
import os

import torch

from ..models.errors import GenAffectInputError, ModelFileError
from ..models.files.weight_files import read_weights, write_safetensors
from ..models.generation import arc2face
from ..models.generation.expression_adapter import FORMAT as ADAPTER_FORMAT
from ..models.generation.expression_adapter import ExpressionAdapter, load_expression_adapter
from ..models.generation.reference_adapter import ReferenceLora, load_reference_lora
from ..models.images import image_batch_to_rgb_uint8, rgb_uint8_to_image_batch
from . import comfy_host, sockets
from .hosting import patching
from .hosting.expression_adapter import install as install_expression_adapter
from .hosting.reference_adapter import install as install_reference_adapter
from .patch_node import ModelPatchNode

log = logging.getLogger(__name__)

ENCODER_HINT = ("Download encoder/pytorch_model.bin from https://huggingface.co/FoivosPar/Arc2Face into "
                "ComfyUI/models/arc2face/encoder/.")
WEIGHT_DTYPES = {"default": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CLIP_L_WIDTH = 768


class MissingAdapter:
    """An adapter socket whose file was not downloaded: using it raises the message."""

    def __init__(self, message: str):
        self.message = message


def _adapter_of(adapter, kind: type, what: str, output: str):
    if isinstance(adapter, kind):
        return adapter
    if isinstance(adapter, MissingAdapter):
        raise GenAffectInputError(adapter.message)
    raise GenAffectInputError(
        f"this input is a {type(adapter).__name__}, not Arc2Face's {what}; take the {output} output of "
        "GenAffect Arc2Face Loader."
    )


def expression_adapter_of(adapter) -> ExpressionAdapter:
    return _adapter_of(adapter, ExpressionAdapter, "Expression Adapter", "expression_adapter")


def reference_adapter_of(adapter) -> ReferenceLora:
    return _adapter_of(adapter, ReferenceLora, "Reference Adapter", "reference_adapter")


def _save_conversion(state: dict[str, torch.Tensor], path: str, published: str, format_name: str) -> None:
    """Write ``state`` as the safetensors file that stands in for the pickle ``path`` from now on."""
    target = os.path.join(os.path.dirname(path), os.path.basename(arc2face.CONVERTED[published]))
    write_safetensors(state, target, metadata={"format": format_name, "source": os.path.basename(path)})
    log.info("GenAffect: wrote %s; it is loaded instead of the pickle from now on.", target)


def _read_encoder(path: str, convert: bool) -> dict[str, torch.Tensor]:
    state = read_weights(path, ENCODER_HINT)
    if convert and not path.endswith(".safetensors"):
        _save_conversion(state, path, arc2face.ENCODER, "pt")
    return state


def _read_adapter(files: arc2face.Arc2FaceFiles, convert: bool):
    path = files.expression_adapter
    if path is None:
        return MissingAdapter("the Expression Adapter is not installed:\n" + files.missing[arc2face.EXPRESSION_ADAPTER])
    adapter = load_expression_adapter(path)
    if convert and not path.endswith(".safetensors"):
        _save_conversion(adapter.state_dict_published(), path, arc2face.EXPRESSION_ADAPTER, ADAPTER_FORMAT)
    return adapter


def _read_reference(files: arc2face.Arc2FaceFiles):
    if files.reference_lora is None:
        return MissingAdapter("the Reference Adapter is not installed:\n" + files.missing[arc2face.REFERENCE_LORA])
    return load_reference_lora(files.reference_lora)


class GenAffectArc2FaceLoader:
    DESCRIPTION = (
        "Loads Arc2Face from models/arc2face/ in its published layout (huggingface.co/FoivosPar/Arc2Face): the "
        "SD1.5 UNet as a MODEL, its fine-tuned CLIP text encoder as a CLIP, the Expression Adapter and the Reference "
        "Adapter. Use an SD1.5 "
        "VAE from models/vae/. Missing files are named with their download address and folder."
    )
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CLIP", sockets.EXPRESSION_ADAPTER, sockets.REFERENCE_ADAPTER, "STRING")
    RETURN_NAMES = ("model", "clip", "expression_adapter", "reference_adapter", "info")
    OUTPUT_TOOLTIPS = (
        "Arc2Face's UNet, a normal ComfyUI MODEL (KSampler, LoRAs, consistent attention all apply).",
        "Arc2Face's text encoder; feed it to GenAffect Arc2Face Conditioning.",
        "The Expression Adapter (FLAME-55 cross-attention) for GenAffect Apply Expression Adapter.",
        "The Reference Adapter's LoRA, for GenAffect Apply Reference Adapter (editing a real photo).",
        "The files loaded.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "weight_dtype": (list(WEIGHT_DTYPES), {
                    "default": "default",
                    "tooltip": "The UNet's weight precision; default lets ComfyUI choose for your GPU (fp16 on most)."}),
            },
            "optional": {
                "convert_pickles_to_safetensors": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Also write encoder/model.safetensors and exp_adapter/exp_adapter.safetensors next to "
                               "the published .bin files (read safely with weights_only either way); later loads "
                               "use the safetensors. The .bin files may then be deleted."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, weight_dtype):
        """Before a run: every required Arc2Face file is there (all missing ones listed at once, with addresses)."""
        def precision():
            if weight_dtype not in WEIGHT_DTYPES:
                raise GenAffectInputError(f"weight_dtype {weight_dtype!r:.40} is not one of {', '.join(WEIGHT_DTYPES)}.")

        roots = comfy_host.model_roots("arc2face")
        return comfy_host.validation_answer(precision,
                                            lambda: arc2face.locate_files(roots, [comfy_host.models_dir()] + roots))

    @classmethod
    def IS_CHANGED(cls, **_):
        roots = comfy_host.model_roots("arc2face")
        try:
            files = arc2face.locate_files(roots, [comfy_host.models_dir()] + roots)
        except ModelFileError:
            return "missing"  # load() explains
        return comfy_host.file_identity(files.unet, files.encoder, files.expression_adapter, files.reference_lora)

    def load(self, weight_dtype, convert_pickles_to_safetensors=False):
        import comfy.sd
        import folder_paths

        roots = comfy_host.model_roots("arc2face")
        files = arc2face.locate_files(roots, [comfy_host.models_dir()] + roots)
        dtype = WEIGHT_DTYPES[weight_dtype]
        model = comfy.sd.load_diffusion_model(files.unet, model_options={"dtype": dtype} if dtype else {})
        encoder = _read_encoder(files.encoder, convert_pickles_to_safetensors)
        clip = comfy.sd.load_text_encoder_state_dicts(
            [encoder], embedding_directory=folder_paths.get_folder_paths("embeddings"),
            clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
        adapter = _read_adapter(files, convert_pickles_to_safetensors)
        reference = _read_reference(files)
        info = "\n".join([f"UNet: {files.unet}", f"text encoder: {files.encoder}",
                          f"expression adapter: {files.expression_adapter or 'not installed'}",
                          f"reference LoRA: {files.reference_lora or 'not installed'}"])
        return (model, clip, adapter, reference, info)


def _token_width(clip) -> int:
    """The width of the CLIP's token embeddings (768 for Arc2Face's CLIP ViT-L)."""
    model = clip.cond_stage_model
    inner = getattr(model, getattr(model, "clip", ""), None)
    try:
        return inner.transformer.get_input_embeddings().weight.shape[1]
    except AttributeError:
        return CLIP_L_WIDTH


class GenAffectArc2FaceConditioning:
    DESCRIPTION = (
        "Arc2Face's identity conditioning: the prompt 'photo of a id person' with the 'id' word's embedding "
        "replaced by the ArcFace identity, encoded by Arc2Face's CLIP. Negative = the same encoder on an empty "
        "prompt. Sample with CFG about 3 (DPM++ 2M, 25 steps, 512x512)."
    )
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The identity conditioning.", "The empty-prompt conditioning Arc2Face uses as negative.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "Arc2Face's text encoder, from GenAffect Arc2Face Loader."}),
                "identity": (sockets.IDENTITY, {
                    "tooltip": "From GenAffect Extract Identity, with recognition 'arcface.onnx (Arc2Face)'; or Crop "
                               "Faces' identity: one row per crop, each its own person."}),
            },
            "optional": {
                "extra_words": ("STRING", {
                    "default": "", "multiline": False,
                    "tooltip": "Words appended to the prompt. Arc2Face was trained on the fixed prompt, so their "
                               "effect is weak; leave empty for the published behaviour."}),
            },
        }

    def encode(self, clip, identity, extra_words=""):
        recognizer = os.path.basename(identity.recognition_model or "")
        if recognizer and recognizer != arc2face.RECOGNITION_FILE:
            log.warning("GenAffect: this identity was embedded with %s; Arc2Face was trained on %s embeddings, so "
                        "the likeness will suffer. Choose 'arcface.onnx (Arc2Face)' in the Face Analyzer Loader.",
                        recognizer, arc2face.RECOGNITION_FILE)
        text = f"{arc2face.PROMPT} {extra_words.strip()}".strip()
        tokens = clip.tokenize(text)
        if set(tokens) != {"l"}:
            raise GenAffectInputError(
                f"Arc2Face conditioning needs Arc2Face's CLIP (one CLIP-L, SD1.5 style); this CLIP has encoders "
                f"{sorted(tokens)}. Connect the clip output of GenAffect Arc2Face Loader."
            )
        id_token = clip.tokenize(arc2face.ID_WORD)["l"][0][1][0]  # after the start token
        people = identity.person_embeddings if identity.several_people else identity.embedding[None]
        rows = [clip.encode_from_tokens_scheduled(arc2face.place_identity(
            tokens, id_token, arc2face.identity_vector(embedding, _token_width(clip)))) for embedding in people]
        if identity.several_people:  # one row per crop (Crop Faces): image i of the batch is its own person
            rows = [rows[person] for person in identity.person_of_image]
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        return (_stacked(rows), negative)


def _stacked(conditionings: list) -> list:
    """One CONDITIONING whose rows are the given single-row ones (image i of a latent batch reads row i)."""
    if len(conditionings) == 1:
        return conditionings[0]
    extras = dict(conditionings[0][0][1])
    for key, value in extras.items():
        if isinstance(value, torch.Tensor):
            extras[key] = torch.cat([c[0][1][key] for c in conditionings])
    return [[torch.cat([c[0][0] for c in conditionings]), extras]]


class GenAffectApplyExpressionAdapter(ModelPatchNode):
    DESCRIPTION = (
        "Adds Arc2Face's Expression Adapter to a MODEL: every cross-attention layer also attends to tokens made from "
        "a FLAME-55 expression. With N expressions sample a latent batch of N (image i gets expression i); one "
        "expression applies to every image. The negative side gets the neutral (zero) vector, as published. The "
        "input model is not changed."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Arc2Face's UNet (GenAffect Arc2Face Loader)."}),
                "expression_adapter": (sockets.EXPRESSION_ADAPTER, {"tooltip": "From GenAffect Arc2Face Loader."}),
                "expression": (sockets.EXPRESSION, {
                    "tooltip": "Expressions with FLAME-55: GenAffect Estimate Expression with SMIRK loaded, or a "
                               "blendshape expression through GenAffect Apply Expression Mapping."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                       "tooltip": "The adapter's scale; 1.0 as published, 0 turns it off."}),
                **patching.schedule_range_inputs("the adapter"),
            },
        }

    def apply(self, model, expression_adapter, expression, strength, start_percent, end_percent):
        adapter = expression_adapter_of(expression_adapter)
        flame = expression.require("flame", node="GenAffect Apply Expression Adapter")
        return (install_expression_adapter(model, adapter, torch.from_numpy(flame).float(), strength,
                                          start_percent, end_percent),)


class GenAffectApplyReferenceAdapter(ModelPatchNode):
    DESCRIPTION = (
        "Arc2Face's Reference Adapter: edits a real photo instead of inventing a new one. The photo (aligned with "
        "GenAffect Align Face) runs once through the incoming model; while sampling, the positive side's "
        "self-attention also reads those features, and the adapter's LoRA is applied. It keeps the photo's pose, "
        "hair and background; it tends to copy the photo's expression too, so lower lora_strength for stronger "
        "expressions. Apply the Expression Adapter before or after it."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Arc2Face's UNet (GenAffect Arc2Face Loader), with or without the "
                                               "Expression Adapter."}),
                "reference_adapter": (sockets.REFERENCE_ADAPTER, {"tooltip": "From GenAffect Arc2Face Loader."}),
                "vae": ("VAE", {"tooltip": "The SD1.5 VAE you decode with; it encodes the photo."}),
                "positive": ("CONDITIONING", {
                    "tooltip": "The positive output of GenAffect Arc2Face Conditioning (the photo is read with it)."}),
                "photo": ("IMAGE", {
                    "tooltip": "The photo to edit, aligned by GenAffect Align Face (512x512). One photo for all "
                               "images, or one per image of the latent batch."}),
                "lora_strength": ("FLOAT", {
                    "default": 0.8, "min": 0.0, "max": 1.5, "step": 0.05,
                    "tooltip": "The adapter LoRA's scale. 0.8 as Arc2Face suggests; lower follows the target "
                               "expression more, higher keeps more of the photo."}),
            },
        }

    def apply(self, model, reference_adapter, vae, positive, photo, lora_strength):
        lora = reference_adapter_of(reference_adapter)
        pixels = _square_photos(photo)
        if not positive or not torch.is_tensor(positive[0][0]):
            raise GenAffectInputError("positive is empty; connect the positive output of GenAffect Arc2Face "
                                      "Conditioning.")
        context = positive[0][0]
        if context.shape[0] not in (1, pixels.shape[0]):
            raise GenAffectInputError(f"the positive conditioning has {context.shape[0]} rows for {pixels.shape[0]} "
                                      "photos; use one conditioning, or one per photo.")
        latent = vae.encode(pixels)
        return (install_reference_adapter(model, lora, latent, context, lora_strength),)


def _square_photos(photo) -> torch.Tensor:
    """The photos as an RGB IMAGE batch, refused unless square (the aligned crop the adapter expects)."""
    frames = image_batch_to_rgb_uint8(photo, what="Apply Reference Adapter photo")
    height, width = frames[0].shape[:2]
    if height != width or height % 8:
        raise GenAffectInputError(
            f"the photo is {width}x{height}; the Reference Adapter reads a square crop aligned like its training "
            "data, its side a multiple of 8. Pass the photo through GenAffect Align Face (size 512) first.")
    if height != 512:
        log.info("GenAffect: the reference photo is %dx%d; Arc2Face was trained at 512x512.", width, height)
    return rgb_uint8_to_image_batch(frames)
