"""Expression intensity in conditioning space (category GenAffect/sampling): one conditioning per image,
moved from a neutral edit toward the targets by the image's expression (``models/conditioning_blend.py``)."""

from __future__ import annotations

import logging

import torch

from ..models.errors import GenAffectInputError
from ..models.expression import expression_library
from ..models.generation import conditioning_blend
from . import sockets
from .conditioning_batch import same_reference_photo
from .sampling.set_sampler import first_value

log = logging.getLogger(__name__)
FITS = ("exact blend", "nearest blend")
NOT_A_BLEND = 0.25  # an expression losing more than this share of its blendshapes to the fit is reported


BLENDED = ("pooled_output", "attention_mask")  # what the blend computes; every other entry must be the same for all


def _single(conditioning, what: str):
    """(tensor (1, T, D), extras) of one plain prompt, as a text-encode node outputs it."""
    entry = conditioning[0] if isinstance(conditioning, list) and len(conditioning) == 1 else None
    plain = (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], torch.Tensor)
             and entry[0].ndim == 3 and entry[0].shape[0] == 1 and entry[0].is_floating_point()
             and isinstance(entry[1], dict))
    if not plain:
        raise GenAffectInputError(f"the {what} conditioning must be one plain prompt (one text-encode node's output, "
                                  "not combined, area, masked or batched prompts).")
    tensor, extras = entry
    mask = extras.get("attention_mask")
    if mask is not None and (not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(tensor.shape[:2])
                             or not bool(((mask == 0) | (mask == 1)).all())):
        raise GenAffectInputError(f"the {what} conditioning's attention_mask is not a 0/1 mask of its "
                                  f"{tensor.shape[1]} tokens; connect the text-encode node's output directly.")
    pooled = extras.get("pooled_output")
    if pooled is not None and (not isinstance(pooled, torch.Tensor) or pooled.ndim != 2 or pooled.shape[0] != 1):
        raise GenAffectInputError(f"the {what} conditioning's pooled_output is not one pooled text vector; connect "
                                  "the text-encode node's output directly.")
    return tensor, extras


def _same_value(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    try:
        return a is b or bool(a == b)
    except Exception:  # noqa: BLE001  (objects whose == is not a truth value)
        return False


def _same_settings(neutral_extras: dict, extras: dict, name: str) -> None:
    """Everything but the blended text (areas, masks, timestep ranges, guidance, reference photos, ...) must be the
    same on the neutral and each target: the blend keeps the neutral's, so a difference would be dropped silently."""
    for key in sorted(set(neutral_extras) | set(extras), key=str):
        if key in BLENDED:
            continue
        if key not in neutral_extras or key not in extras or not _same_value(neutral_extras[key], extras[key]):
            where = "only the neutral" if key not in extras else "only " + name if key not in neutral_extras else \
                f"the neutral and {name} differently"
            raise GenAffectInputError(f"'{key}' is set on {where}; the blend moves only the text, so encode the "
                                      "neutral and every target the same way (same photo, area, mask, guidance).")


class GenAffectConditioningIntensity:
    DESCRIPTION = (
        "Continuous expression intensity and blends for text- and edit-conditioned models (PixelSmile's method on "
        "Qwen-Image-Edit-2511): encode a neutral instruction and one per target expression (with the photo, for an "
        "editor), and each image gets e = e_neutral + sum alpha_k (e_k - e_neutral), its alphas read from its "
        "expression, fitted in the estimator's space (a preset at intensity 0.4 gives alpha 0.4, at 1.5 alpha 1.5; "
        "Interpolate's steps give a smooth sequence; Mix gives a blend). alpha 0 is the neutral conditioning "
        "exactly, 1 a target exactly."
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
                                                   "up to 1.5). An expression needing more is an error, unless "
                                                   "fit is 'nearest blend'."}),
            },
            # optional and last: workflows saved before it keep their values in place
            "optional": {
                "fit": (list(FITS), {"default": FITS[0], "tooltip": (
                    "exact blend: each expression must be a blend of the targets within 0..max_alpha (presets, "
                    "transitions, mixes), else an error. nearest blend: the nearest such blend, for measured "
                    "expressions (a video's Expression Track); the alphas output says how much each lost.")}),
            },
        }

    def blend(self, neutral, targets, target_expressions, expression, max_alpha, fit=FITS[0]):
        neutral_tensor, neutral_extras = _single(first_value(neutral), "neutral")
        if not isinstance(targets, list) or not targets:
            raise GenAffectInputError("no target conditionings: encode one instruction per target expression and "
                                      "connect them to targets.")
        parts = [_single(c, f"target {i + 1}") for i, c in enumerate(targets)]
        # in the estimator's space, where a preset at any intensity is the same straight line from the neutral face
        target_rows = first_value(target_expressions).estimator_space("Conditioning Intensity")
        wanted = first_value(expression)
        if len(parts) != len(target_rows):
            raise GenAffectInputError(f"{len(parts)} target conditionings for {len(target_rows)} target expressions: "
                                      "encode one instruction per target expression, in the same order.")
        pooled = "pooled_output" in neutral_extras
        for index, (tensor, extras) in enumerate([(neutral_tensor, neutral_extras)] + parts):
            name = "the neutral" if index == 0 else f"target {index}"
            if tensor.dtype != neutral_tensor.dtype:
                raise GenAffectInputError(f"{name} conditioning is {tensor.dtype}, the neutral {neutral_tensor.dtype}: "
                                          "encode the neutral and every target with the same text encoder node.")
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
            if extras.get("pooled_output") is not None and \
                    extras["pooled_output"].shape != neutral_extras["pooled_output"].shape:
                raise GenAffectInputError(f"target {index + 1}'s pooled text vector is "
                                          f"{list(extras['pooled_output'].shape)}, the neutral's "
                                          f"{list(neutral_extras['pooled_output'].shape)}: encode all with the same "
                                          "text encoder node.")
            _same_settings(neutral_extras, extras, f"target {index + 1}")
        alphas, residuals = conditioning_blend.fit_alphas(wanted.estimator_space("Conditioning Intensity"),
                                                          target_rows, first_value(max_alpha),
                                                          expression_library.estimator_space().neutral,
                                                          nearest=first_value(fit) == "nearest blend")
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

