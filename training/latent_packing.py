"""Stored latents as a diffusers transformer takes them: cut into patches, one token per patch, row by row
(as FluxPipeline and QwenImagePipeline pack them), back again, and the RoPE positions of a packed image."""

from __future__ import annotations

import torch


def pack(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C p²), patches row by row as FluxPipeline and QwenImagePipeline pack."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5).reshape(
        b, (h // patch) * (w // patch), c * patch * patch)


def unpack(tokens: torch.Tensor, height: int, width: int, patch: int) -> torch.Tensor:
    b, _, d = tokens.shape
    c = d // (patch * patch)
    return tokens.view(b, height // patch, width // patch, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(
        b, c, height, width)


def grid_ids(rows: int, columns: int, index: float, axes: int, device) -> torch.Tensor:
    """RoPE positions of a packed image: (index, row, column) for FLUX.1, (index, row, column, 0) for FLUX.2."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(columns), indexing="ij")
    ids = [torch.full_like(r, 0) + index, r, c] + [torch.zeros_like(r)] * (axes - 3)
    return torch.stack(ids, -1).reshape(-1, axes).float().to(device)
