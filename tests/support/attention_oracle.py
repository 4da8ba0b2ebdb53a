"""The naive consistent-attention oracle the attention code is held to: full attention over the whole set with an
explicit mask saying which keys each query may see (no streaming, no per-image loop), in float64."""

from __future__ import annotations

import torch


def oracle(q, k, v, images, sharing, plan, padded=None):
    """Per chunk: concatenate the N sequences, allow own tokens everywhere (but ``padded`` (B, L) keys)
    and the planned borrowed image tokens for image-token queries, and run masked softmax attention
    over everything."""
    batch, heads, length, dim = q.shape
    out = torch.empty_like(q, dtype=torch.float64)
    image_rows = torch.zeros(length, dtype=torch.bool)
    image_rows[sharing.image_tokens] = True
    for c in range(batch // images):
        rows = slice(c * images, (c + 1) * images)
        q_all = q[rows].double().permute(1, 0, 2, 3).reshape(heads, images * length, dim)
        k_all = k[rows].double().permute(1, 0, 2, 3).reshape(heads, images * length, dim)
        v_all = v[rows].double().permute(1, 0, 2, 3).reshape(heads, images * length, dim)
        allowed = torch.zeros(images * length, images * length, dtype=torch.bool)
        for i in range(images):
            own = slice(i * length, (i + 1) * length)
            allowed[own, own] = True
            if padded is not None:
                allowed[own, i * length + torch.nonzero(padded[c * images + i]).flatten()] = False
            for j, positions in plan[c][i]:
                receiving = torch.arange(i * length, (i + 1) * length)[image_rows]
                allowed[receiving.unsqueeze(1), (j * length + positions).unsqueeze(0)] = True
        scores = q_all @ k_all.transpose(-1, -2) / dim ** 0.5
        scores = scores.masked_fill(~allowed, float("-inf"))
        result = torch.softmax(scores, dim=-1) @ v_all
        out[rows] = result.reshape(heads, images, length, dim).permute(1, 0, 2, 3)
    return out.to(q.dtype)
