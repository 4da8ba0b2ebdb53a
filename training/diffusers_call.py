"""How each family's diffusers transformer is called on stored latents, as its pipeline calls it.

Latents are (B, C, h, w) as ``training/backbones.py`` stores them. FLUX.1 and Qwen-Image cut them into
2x2 patches; FLUX.2's are already patchified, one token per position. An editor's reference latents
(another photo of the person) are packed the same way and appended after the generated tokens, with
the positions its pipeline gives them: FLUX.1 Kontext index 1, FLUX.2 time offset 10, Qwen-Image a
second entry of ``img_shapes``. The prediction of the generated tokens is returned, unpacked.
"""

from __future__ import annotations

import torch

from ..models.generation.backbones import patch_tokens

PATCH = {"flux": 2, "qwen_image": 2, "flux2": 1, "sd3": 2}


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


def generated_tokens(family: str, latents: torch.Tensor) -> int:
    return patch_tokens(latents.shape, PATCH[family])


def velocity(transformer, family: str, noisy: torch.Tensor, t: torch.Tensor, batch: dict,
             guidance: float = 3.5) -> torch.Tensor:
    """The transformer's prediction of ``noise - x0`` for ``noisy`` (B, C, h, w) at times ``t`` in [0, 1]."""
    dtype, device = transformer.dtype, noisy.device
    text = batch["prompt_embeds"].to(dtype)
    references = batch.get("reference_latents")
    height, width = noisy.shape[-2:]
    distilled = None
    if getattr(transformer.config, "guidance_embeds", False):
        distilled = torch.full((noisy.shape[0],), guidance, device=device, dtype=dtype)
    if family == "sd3":
        return transformer(hidden_states=noisy.to(dtype), timestep=(t * 1000).to(dtype), encoder_hidden_states=text,
                           pooled_projections=batch["pooled_prompt_embeds"].to(dtype), return_dict=False)[0]
    patch = PATCH[family]
    tokens = [pack(noisy, patch)] + ([] if references is None else [pack(references, patch)])
    hidden = torch.cat(tokens, dim=1).to(dtype)
    if family == "flux":
        ids = [grid_ids(height // 2, width // 2, 0, 3, device)]
        if references is not None:
            ids.append(grid_ids(references.shape[-2] // 2, references.shape[-1] // 2, 1, 3, device))
        out = transformer(hidden_states=hidden, timestep=t.to(dtype), guidance=distilled,
                          pooled_projections=batch["pooled_prompt_embeds"].to(dtype), encoder_hidden_states=text,
                          txt_ids=torch.zeros(text.shape[1], 3, device=device), img_ids=torch.cat(ids),
                          return_dict=False)[0]
    elif family == "flux2":
        ids = [grid_ids(height, width, 0, 4, device)]
        if references is not None:
            ids.append(grid_ids(*references.shape[-2:], 10, 4, device))
        text_ids = torch.zeros(text.shape[1], 4, device=device)
        text_ids[:, 3] = torch.arange(text.shape[1], device=device)
        out = transformer(hidden_states=hidden, timestep=t.to(dtype), guidance=distilled, encoder_hidden_states=text,
                          txt_ids=text_ids, img_ids=torch.cat(ids), return_dict=False)[0]
    elif family == "qwen_image":
        shapes = [(1, height // 2, width // 2)]
        if references is not None:
            shapes.append((1, references.shape[-2] // 2, references.shape[-1] // 2))
        out = transformer(hidden_states=hidden, timestep=t.to(dtype), guidance=distilled, encoder_hidden_states=text,
                          encoder_hidden_states_mask=batch["prompt_mask"], img_shapes=[shapes] * noisy.shape[0],
                          return_dict=False)[0]
    else:
        raise NotImplementedError(f"training on {family} is not built; the trainer trains {', '.join(PATCH)}.")
    return unpack(out[:, :tokens[0].shape[1]], height, width, patch)
