"""Each family's diffusers transformer called on stored latents, as its pipeline calls it.

Latents are (B, C, h, w) as ``training/families.py`` stores them. Families whose pipelines pack latents into tokens
(FLUX.1, FLUX.2, Qwen-Image) get them cut into patches of the family's ``patch_size`` (``models/generation/
backbones.py``: FLUX.2's are already patchified, one token per position), an editor's reference latents packed the
same way after them; the family's own call (``families.py``) adds its positions and conditioning. The prediction of
the generated tokens is returned, unpacked.
"""

from __future__ import annotations

import torch

from ..models.generation.backbones import family as family_record, patch_tokens
from .families import TransformerCall, training_family
from .latent_packing import pack, unpack


def generated_tokens(family: str, latents: torch.Tensor) -> int:
    return patch_tokens(latents.shape, family_record(family).patch_size)


def velocity(transformer, family: str, noisy: torch.Tensor, t: torch.Tensor, batch: dict,
             guidance: float = 3.5) -> torch.Tensor:
    """The transformer's prediction of ``noise - x0`` for ``noisy`` (B, C, h, w) at times ``t`` in [0, 1]."""
    trained = training_family(family)
    patch = family_record(family).patch_size
    dtype = transformer.dtype
    references = batch.get("reference_latents")
    distilled = None
    if getattr(transformer.config, "guidance_embeds", False):
        distilled = torch.full((noisy.shape[0],), guidance, device=noisy.device, dtype=dtype)
    tokens = None
    if trained.packs:
        tokens = [pack(noisy, patch)] + ([] if references is None else [pack(references, patch)])
    out = trained.call(TransformerCall(
        transformer=transformer, hidden=None if tokens is None else torch.cat(tokens, dim=1).to(dtype), noisy=noisy,
        references=references, text=batch["prompt_embeds"].to(dtype), t=t, distilled=distilled, batch=batch,
        patch=patch))
    if tokens is None:
        return out
    return unpack(out[:, :tokens[0].shape[1]], *noisy.shape[-2:], patch)
