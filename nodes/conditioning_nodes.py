"""Expression intensity in conditioning space (category GenAffect/sampling): one conditioning per image,
moved from a neutral edit toward the targets by the image's expression (``models/conditioning_blend.py``)."""

from __future__ import annotations

import logging

import torch

from ..models.errors import GenAffectInputError
from ..models.generation import conditioning_blend
from . import sockets
from .conditioning_batch import same_reference_photo
from .sampling.set_sampler import first_value

log = logging.getLogger(__name__)
NOT_A_BLEND = 0.25  # an expression losing more than this share of its blendshapes to the fit is reported


def _single(conditioning, what: str):
    if not isinstance(conditioning, list) or len(conditioning) != 1 or conditioning[0][0].shape[0] != 1:
        raise GenAffectInputError(f"the {what} conditioning must be one plain prompt (one text-encode node, not "
                                  "combined, area or batched prompts).")
    return conditioning[0]


class GenAffectConditioningIntensity:
    DESCRIPTION = (
        "Continuous expression intensity and blends for text- and edit-conditioned models (PixelSmile's method on "
        "Qwen-Image-Edit-2511): encode a neutral instruction and one per target expression (with the photo, for an "
        "editor), and each image gets e = e_neutral + sum alpha_k (e_k - e_neutral), its alphas read from its "
        "expression (a preset at intensity 0.4 gives alpha 0.4; Interpolate's steps give a smooth sequence; Mix "
        "gives a blend). alpha 0 is the neutral conditioning exactly, 1 a target exactly."
    )
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "blend"
    INPUT_IS_LIST = True  # the targets arrive as one CONDITIONING per target expression
    RETURN_TYPES = ("CONDITIONING", "STRING")
    RETURN_NAMES = ("conditioning", "alphas")
    OUTPUT_IS_LIST = (True, False)
    OUTPUT_TOOLTIPS = ("One conditioning per image (a list), for the Consistent Batch Sampler or DiT Sampler.",
                       "Each image's alphas per target, and how much of its expression the targets could not express.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "neutral": ("CONDITIONING", {"tooltip": "The neutral instruction or prompt, encoded like the targets."}),
                "targets": ("CONDITIONING", {"tooltip": "One encoded instruction per target expression, in the order "
                                                        "of target_expressions (e.g. Expression To Prompt -> encode)."}),
                "target_expressions": (sockets.EXPRESSION, {"tooltip": "The targets at full intensity (alpha 1), one per "
                                                                    "target conditioning."}),
                "expression": (sockets.EXPRESSION, {"tooltip": "What each image should show; its intensities become "
                                                            "the alphas (one conditioning per expression)."}),
                "max_alpha": ("FLOAT", {"default": 1.5, "min": 0.0, "max": 3.0, "step": 0.05,
                                        "tooltip": "Largest intensity allowed; above 1 exaggerates (PixelSmile shows "
                                                   "up to 1.5). An expression needing more is an error."}),
            }
        }

    def blend(self, neutral, targets, target_expressions, expression, max_alpha):
        neutral_tensor, neutral_extras = _single(first_value(neutral), "neutral")
        parts = [_single(c, f"target {i + 1}") for i, c in enumerate(targets)]
        target_rows = first_value(target_expressions).require("blendshapes", "Conditioning Intensity")
        wanted = first_value(expression)
        if len(parts) != len(target_rows):
            raise GenAffectInputError(f"{len(parts)} target conditionings for {len(target_rows)} target expressions: "
                                      "encode one instruction per target expression, in the same order.")
        pooled = "pooled_output" in neutral_extras
        for index, (tensor, extras) in enumerate([(neutral_tensor, neutral_extras)] + parts):
            name = "the neutral" if index == 0 else f"target {index}"
            if not bool(torch.isfinite(tensor).all()):
                raise GenAffectInputError(f"{name} conditioning holds NaN or infinite values; the text encoder that "
                                          "made it failed (often fp16 overflow); fix that node.")
            if ("pooled_output" in extras) != pooled:
                differs = "lacks the pooled text vector the neutral has" if pooled else "has a pooled text vector"
                raise GenAffectInputError(f"{name} conditioning {differs}: encode the neutral and every target with the "
                                          "same text encoder node.")
        for index, (tensor, extras) in enumerate(parts):
            if tensor.shape[2] != neutral_tensor.shape[2]:
                raise GenAffectInputError(f"target {index + 1} comes from another text encoder than the neutral "
                                          f"(width {tensor.shape[2]}, neutral {neutral_tensor.shape[2]}).")
            if not same_reference_photo(neutral_extras, extras):
                raise GenAffectInputError(f"target {index + 1} was encoded with another reference photo than the "
                                          "neutral; encode the neutral and every target with the same photo (one VAE "
                                          "Encode).")
        alphas, residuals = conditioning_blend.fit_alphas(wanted.require("blendshapes", "Conditioning Intensity"),
                                                          target_rows, first_value(max_alpha))
        conditionings, lines = [], []
        for image, (row, residual) in enumerate(zip(alphas, residuals)):
            tensor, keep = conditioning_blend.blend(
                neutral_tensor, [t for t, _ in parts], row, neutral_extras.get("attention_mask"),
                [extras.get("attention_mask") for _, extras in parts])
            extras = dict(neutral_extras)
            extras.pop("attention_mask", None)
            if keep is not None:
                extras["attention_mask"] = keep.to(torch.int64)  # Qwen-Image masks the padding (1 keep, 0 pad)
            if "pooled_output" in neutral_extras:
                extras["pooled_output"] = conditioning_blend.blend(
                    neutral_extras["pooled_output"], [e["pooled_output"] for _, e in parts], row)[0]
            conditionings.append([[tensor, extras]])
            label = wanted.labels[image]
            lines.append(f"{image + 1} {label}: " + ", ".join(
                f"{name} {a:.3f}" for name, a in zip(first_value(target_expressions).labels, row))
                + (f"  (not a blend of the targets: {residual:.0%} of it lost)" if residual > NOT_A_BLEND else ""))
            if residual > NOT_A_BLEND:
                log.warning("GenAffect Conditioning Intensity: image %d (%s) is not a blend of the targets; %.0f%% of "
                            "its expression cannot be expressed by them.", image + 1, label, 100 * residual)
        return (conditionings, "\n".join(lines))

