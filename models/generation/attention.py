"""Attention as GenAffect's modules compute it when no host kernel is given: PyTorch's SDPA, and the one
change of layout between ``(B, L, heads x D)`` (projections, ComfyUI's default) and ``(B, heads, L, D)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads x D) -> (B, heads, L, D)."""
    batch, length, width = t.shape
    return t.view(batch, length, heads, width // heads).transpose(1, 2)


def from_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, D) -> (B, L, heads x D)."""
    batch, heads, length, dim = t.shape
    return t.transpose(1, 2).reshape(batch, length, heads * dim)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, heads, L, D) attention; ``mask`` additive, broadcast to (B, heads, L, keys), or None."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def attention_flat(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads x D) attention, the reference the hosts' optimized kernels must match."""
    return from_heads(attention(to_heads(q, heads), to_heads(k, heads), to_heads(v, heads)))
