"""One CONDITIONING per image, folded into a single CONDITIONING whose tensors have a batch of N.

ComfyUI gives image i of a latent batch row i of a conditioning tensor whose batch equals the latent
batch (``repeat_to_batch_size`` leaves it as it is), so stacking per-image prompts is how one
sampling run gets a different prompt per image. A CONDITIONING is a list of ``[tensor (1, tokens,
width), {"pooled_output": (1, width), ...}]`` entries.

Prompts of different lengths: a model that honours a padding mask (Qwen-Image, which encodes prompts
unpadded) gets them zero-padded with an ``attention_mask`` marking the padding, which leaves each
image's attention as with its prompt alone; other models get ComfyUI's own rule, repetition to a
common length. An editor's reference photo is usually shared by the whole set; per-face crops (Crop Faces)
give each image its own photo, which is stacked like the prompts (ComfyUI gives image i row i of each
reference latent too), so those photos must have one size.
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


def _padded_with_mask(parts: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts zero-padded at the end to the longest, and their (N, tokens) masks (1 keep, 0 padding)."""
    longest = max(tensor.shape[1] for tensor, _ in parts)
    tensors, masks = [], []
    for tensor, extras in parts:
        keep = extras.get("attention_mask")
        keep = torch.ones(1, tensor.shape[1], dtype=torch.int64) if keep is None else keep.to(torch.int64).cpu()
        tensors.append(torch.nn.functional.pad(tensor, (0, 0, 0, longest - tensor.shape[1])))
        masks.append(torch.nn.functional.pad(keep, (0, longest - keep.shape[1])))
    return torch.cat(tensors), torch.cat(masks)


def same_reference_photo(extras: dict, other: dict) -> bool:
    """Whether two conditionings carry the same reference latents (an editor's photo), or both none."""
    first, second = extras.get("reference_latents"), other.get("reference_latents")
    if first is None or second is None:
        return first is None and second is None
    return len(first) == len(second) and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, second))


def _stacked_references(parts: list, name: str) -> list | None:
    """The reference latents of per-image photos stacked row by row; None when every image has the same photo
    (or none)."""
    first = parts[0][1].get("reference_latents")
    if all(same_reference_photo(parts[0][1], extras) for _, extras in parts[1:]):
        return None
    shapes = [[tuple(r.shape) for r in extras.get("reference_latents") or []] for _, extras in parts]
    if first is None or any(shape != shapes[0] for shape in shapes) or any(s[0] != 1 for s in shapes[0]):
        raise GenAffectInputError(
            f"the {name} conditionings carry different reference photos ({sorted(set(map(str, shapes)))} latents): "
            "encode every image with the same photo (one VAE Encode), or give each image its own photo of one size "
            "(Crop Faces' crops, one per image).")
    return [torch.cat([extras["reference_latents"][r] for _, extras in parts]) for r in range(len(first))]


def stack_per_image(conditionings: list, images: int, name: str = "positive", text_mask: bool = False):
    """One CONDITIONING for the batch: a single one is kept as it is (every image shares it); N are stacked.
    ``text_mask``: the model honours a prompt padding mask (``models/generation/backbones.py``)."""
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
    references = _stacked_references(parts, name)
    masked = any("attention_mask" in extras for _, extras in parts)
    if masked and not text_mask:
        raise GenAffectInputError(f"the {name} conditionings carry a prompt padding mask, which this model does not "
                                  "read; give its prompts one length (e.g. encode them without Conditioning "
                                  "Intensity's padding) or use a model that reads it (Qwen-Image).")
    extras = dict(parts[0][1])
    extras.pop("attention_mask", None)
    if text_mask and (masked or len({tensor.shape[1] for tensor, _ in parts}) > 1):
        tensor, mask = _padded_with_mask(parts)
        if not bool(mask.all()):
            extras["attention_mask"] = mask
    else:
        tensor = torch.cat(_pad_by_repeating([t for t, _ in parts]))
    for key, value in parts[0][1].items():
        if isinstance(value, torch.Tensor) and value.shape[:1] == (1,) and key != "attention_mask":
            others = [p[1].get(key) for p in parts]
            if all(isinstance(o, torch.Tensor) and o.shape == value.shape for o in others):
                extras[key] = torch.cat(others)
    if references is not None:
        extras["reference_latents"] = references
    return [[tensor, extras]]
