"""One CONDITIONING per image, folded into a single CONDITIONING whose tensors have a batch of N.

ComfyUI gives image i of a latent batch row i of a conditioning tensor whose batch equals the latent
batch (``repeat_to_batch_size`` leaves it as it is), so stacking per-image prompts is how one
sampling run gets a different prompt per image. A CONDITIONING is a list of ``[tensor (1, tokens,
width), {"pooled_output": (1, width), ...}]`` entries.
"""

from __future__ import annotations

import math

import torch

from ..models.errors import GenAffectInputError

MAX_REPEAT = 4  # ComfyUI's own limit when it pads prompts of different lengths by repetition


def _single(conditioning, index: int):
    if len(conditioning) != 1:
        raise GenAffectInputError(
            f"per-image conditioning {index + 1} has {len(conditioning)} parts (combined or area prompts); "
            "give each image one plain prompt (one CLIP Text Encode per image)."
        )
    tensor, extras = conditioning[0]
    if tensor.shape[0] != 1:
        raise GenAffectInputError(f"per-image conditioning {index + 1} already holds a batch of {tensor.shape[0]}.")
    return tensor, extras


def _pad_by_repeating(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat shorter prompts to a common length, as ComfyUI does when it batches prompts.

    Repeating every key of a cross-attention leaves its result unchanged (CLIP's 77-token chunks)."""
    lengths = [t.shape[1] for t in tensors]
    common = math.lcm(*lengths)
    if common // min(lengths) > MAX_REPEAT:
        raise GenAffectInputError(
            f"the prompts encode to {sorted(set(lengths))} tokens, which cannot be padded to one length; "
            "make them similar in length (or shorter than the encoder's minimum, e.g. 77 or 256 tokens)."
        )
    return [t.repeat(1, common // t.shape[1], 1) for t in tensors]


def stack_per_image(conditionings: list, images: int, name: str = "positive"):
    """One CONDITIONING for the batch: a single one is kept as it is (every image shares it); N are stacked."""
    if len(conditionings) == 1:
        return conditionings[0]
    if len(conditionings) != images:
        raise GenAffectInputError(
            f"{len(conditionings)} {name} conditionings for {images} images: give one for all images or one per image."
        )
    parts = [_single(c, i) for i, c in enumerate(conditionings)]
    widths = {tensor.shape[2] for tensor, _ in parts}
    if len(widths) != 1:
        raise GenAffectInputError(f"the {name} conditionings come from different text encoders (widths {sorted(widths)}).")
    tensor = torch.cat(_pad_by_repeating([t for t, _ in parts]))
    extras = dict(parts[0][1])
    for key, value in parts[0][1].items():
        if isinstance(value, torch.Tensor) and value.shape[:1] == (1,):
            others = [p[1].get(key) for p in parts]
            if all(isinstance(o, torch.Tensor) and o.shape == value.shape for o in others):
                extras[key] = torch.cat(others)
    return [[tensor, extras]]
