"""Arc2Face's Reference Adapter: a real photo's features read by self-attention, plus the "ref" LoRA.

(As Arc2Face's code at github.com/foivospar/Arc2Face, 8f3acd7, does it.) A clean UNet runs once at timestep 0 on the photo's latent with the identity
conditioning and banks what every transformer block feeds its self-attention (the ``norm1``
output). While sampling, the conditional rows' self-attention reads keys and values made from
their own tokens followed by the bank; the unconditional rows attend to themselves only. The
LoRA (``ref_adapter/pytorch_lora_weights.safetensors``) is applied to the sampling UNet only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import GenAffectInputError, ModelFileError
from ..files.weight_files import check_weights, read_weights
from .attention import attention_flat
from .batch_rows import condition_rows

HINT = ("Download ref_adapter/pytorch_lora_weights.safetensors from https://huggingface.co/FoivosPar/Arc2Face into "
        "ComfyUI/models/arc2face/ref_adapter/.")

# The key endings of the LoRA layouts diffusers writes (its own, and PEFT's), per module.
LORA_ENDINGS = (".lora.down.weight", ".lora.up.weight", ".lora_A.weight", ".lora_B.weight", ".alpha")
UNET_PREFIX = "unet."


@dataclass(frozen=True)
class ReferenceLora:
    """The "ref" LoRA: its weights keyed by the diffusers UNet module they change ("down_blocks.0....to_q")."""

    weights: dict[str, torch.Tensor]  # "<module>.<lora ending>" -> tensor
    modules: tuple[str, ...]
    source: str


def _module_of(key: str) -> str | None:
    return next((key[: -len(end)] for end in LORA_ENDINGS if key.endswith(end)), None)


def reference_lora_from_state(state: dict[str, torch.Tensor], source: str) -> ReferenceLora:
    """Check a diffusers-format UNet LoRA and key it by UNet module (the ``unet.`` prefix dropped)."""
    weights, foreign = {}, []
    for key, value in state.items():
        name = key[len(UNET_PREFIX):] if key.startswith(UNET_PREFIX) else key
        if _module_of(name) is None or name.startswith(("text_encoder", "te_", "lora_te")):
            foreign.append(key)
        weights[name] = value
    if foreign or not weights:
        shown = ", ".join(foreign[:3]) or "none"
        raise ModelFileError(
            f"{source} is not the Reference Adapter's LoRA: it should hold only diffusers LoRA weights for the UNet "
            f"(keys like 'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight'); "
            f"found {len(foreign)} other key(s), e.g. {shown}. {HINT}"
        )
    check_weights(weights, source, HINT)
    modules = tuple(sorted({_module_of(k) for k in weights}))
    for module in modules:
        if not any(f"{module}{end}" in weights for end in (".lora.down.weight", ".lora_A.weight")):
            raise ModelFileError(f"{source}: the LoRA of {module} has no down (A) matrix; the file is damaged. {HINT}")
    return ReferenceLora(weights=weights, modules=modules, source=source)


def load_reference_lora(path: str) -> ReferenceLora:
    return reference_lora_from_state(read_weights(path, HINT), path)


def bank_rows(references: int, chunk_kinds, images: int) -> list[int | None]:
    """For every row of a model batch, the reference photo its self-attention reads, or None (``batch_rows``)."""
    return condition_rows(chunk_kinds, images, references, "reference photos")


def reference_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, own_tokens: int,
                             rows: list[int | None], heads: int,
                             attention: Callable = attention_flat) -> torch.Tensor:
    """Self-attention where rows reading a photo see their own tokens and its bank, the rest only their own.

    q (B, L, W); k, v (B, L + bank tokens, W): projections of ``own tokens ++ bank``, as one call of
    the layer's ``to_k`` / ``to_v`` makes them. ``rows`` comes from :func:`bank_rows`.
    """
    if len(rows) != q.shape[0]:
        raise GenAffectInputError(f"{len(rows)} row assignments for a batch of {q.shape[0]}.")
    reading = [i for i, row in enumerate(rows) if row is not None]
    if len(reading) == len(rows):
        return attention(q, k, v, heads)
    if not reading:
        return attention(q, k[:, :own_tokens], v[:, :own_tokens], heads)
    own = [i for i, row in enumerate(rows) if row is None]
    out = torch.empty_like(q)
    out[own] = attention(q[own], k[own, :own_tokens], v[own, :own_tokens], heads)
    out[reading] = attention(q[reading], k[reading], v[reading], heads)
    return out
