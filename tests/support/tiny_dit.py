"""Tiny diffusers FLUX.1, FLUX.2, Qwen-Image and SD3 transformers (the real classes, shrunk) and a forward
pass on fixed inputs, with reference-image tokens after the generated ones where the family takes them."""

from __future__ import annotations

import torch

TEXT_WIDTH = 32


def tiny_flux(seed: int = 0):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=3, num_single_layers=5,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_WIDTH,
                                  pooled_projection_dim=TEXT_WIDTH, axes_dims_rope=(4, 6, 6)).eval()


def tiny_sd3(seed: int = 0):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
                                 num_attention_heads=2, joint_attention_dim=TEXT_WIDTH, caption_projection_dim=16,
                                 pooled_projection_dim=TEXT_WIDTH, out_channels=4, pos_embed_max_size=16).eval()


def tiny_flux2(seed: int = 0):
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    return Flux2Transformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=4,
                                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_WIDTH,
                                   timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4),
                                   guidance_embeds=False).eval()


def tiny_qwen_image(seed: int = 0):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=4,
                                       attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_WIDTH,
                                       axes_dims_rope=(4, 6, 6)).eval()


# family -> its tiny diffusers transformer: each family the trainer trains has one (tests/test_families.py)
TINY = {"flux": tiny_flux, "flux2": tiny_flux2, "qwen_image": tiny_qwen_image, "sd3": tiny_sd3}

GENERATED = 16  # a 4x4 grid of generated-image tokens
TEXT = 6


def grid_ids(rows: int, columns: int, index: float, axes: int) -> torch.Tensor:
    """RoPE positions (index, row, column[, 0]) of a packed image, as the FLUX pipelines build them."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(columns), indexing="ij")
    ids = [torch.full_like(r, index), r, c] + [torch.zeros_like(r)] * (axes - 3)
    return torch.stack(ids, -1).reshape(-1, axes).float()


def run(model, seed: int = 1, batch: int = 2, references: int = 0, dtype=torch.float32):
    """One forward pass on fixed random inputs; ``references`` 4x4 reference images follow the generated
    tokens (FLUX.2, Qwen-Image). Returns the output for the generated tokens."""
    g = torch.Generator().manual_seed(seed)
    name = type(model).__name__
    tokens = GENERATED * (1 + references)
    with torch.no_grad():
        if name == "Flux2Transformer2DModel":
            img_ids = torch.cat([grid_ids(4, 4, 10.0 * i, 4) for i in range(1 + references)])
            txt_ids = torch.zeros(TEXT, 4)
            txt_ids[:, 3] = torch.arange(TEXT)
            out = model(hidden_states=torch.randn(batch, tokens, 16, generator=g).to(dtype),
                        encoder_hidden_states=torch.randn(batch, TEXT, TEXT_WIDTH, generator=g).to(dtype),
                        timestep=torch.full((batch,), 0.5, dtype=dtype), img_ids=img_ids, txt_ids=txt_ids,
                        return_dict=False)[0]
            return out[:, :GENERATED]
        if name == "QwenImageTransformer2DModel":  # 8x8 latents in 2x2 patches: 16 tokens of 16 channels each
            out = model(hidden_states=torch.randn(batch, tokens, 16, generator=g).to(dtype),
                        encoder_hidden_states=torch.randn(batch, TEXT, TEXT_WIDTH, generator=g).to(dtype),
                        encoder_hidden_states_mask=torch.ones(batch, TEXT), timestep=torch.full((batch,), 0.5, dtype=dtype),
                        img_shapes=[[(1, 4, 4)] * (1 + references)] * batch, return_dict=False)[0]
            return out[:, :GENERATED]
        if name.startswith("Flux"):
            ids = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1).reshape(-1, 2)
            img_ids = torch.cat([torch.zeros(GENERATED, 1), ids.float()], dim=1)
            return model(hidden_states=torch.randn(batch, GENERATED, 16, generator=g).to(dtype),
                         encoder_hidden_states=torch.randn(batch, TEXT, TEXT_WIDTH, generator=g).to(dtype),
                         pooled_projections=torch.randn(batch, TEXT_WIDTH, generator=g).to(dtype),
                         timestep=torch.full((batch,), 0.5, dtype=dtype), img_ids=img_ids, txt_ids=torch.zeros(TEXT, 3),
                         guidance=None).sample
        return model(hidden_states=torch.randn(batch, 4, 8, 8, generator=g).to(dtype),
                     encoder_hidden_states=torch.randn(batch, TEXT, TEXT_WIDTH, generator=g).to(dtype),
                     pooled_projections=torch.randn(batch, TEXT_WIDTH, generator=g).to(dtype),
                     timestep=torch.full((batch,), 500.0, dtype=dtype)).sample


def as_trained(adapter, std: float = 0.05):
    """The adapter with non-zero output projections, as training leaves them (untrained ones add nothing).
    Drawn from torch's global generator: seed it first."""
    with torch.no_grad():
        for module in [*adapter.after_double.values(), *adapter.after_single.values()]:
            module.to_out.weight.normal_(0, std)
    return adapter
