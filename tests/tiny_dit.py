"""Tiny diffusers FLUX and SD3 transformers (the real classes, shrunk) and a forward pass on fixed inputs."""

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


def run(model, seed: int = 1, batch: int = 2):
    """One forward pass on fixed random inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if type(model).__name__.startswith("Flux"):
            tokens = 16  # a 4x4 latent, patch 1
            ids = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1).reshape(-1, 2)
            img_ids = torch.cat([torch.zeros(tokens, 1), ids.float()], dim=1)
            return model(hidden_states=torch.randn(batch, tokens, 16, generator=g),
                         encoder_hidden_states=torch.randn(batch, 6, TEXT_WIDTH, generator=g),
                         pooled_projections=torch.randn(batch, TEXT_WIDTH, generator=g),
                         timestep=torch.full((batch,), 0.5), img_ids=img_ids, txt_ids=torch.zeros(6, 3),
                         guidance=None).sample
        return model(hidden_states=torch.randn(batch, 4, 8, 8, generator=g),
                     encoder_hidden_states=torch.randn(batch, 6, TEXT_WIDTH, generator=g),
                     pooled_projections=torch.randn(batch, TEXT_WIDTH, generator=g),
                     timestep=torch.full((batch,), 500.0)).sample


def as_trained(adapter, std: float = 0.05):
    """The adapter with non-zero output projections, as training leaves them (untrained ones add nothing).
    Drawn from torch's global generator: seed it first."""
    with torch.no_grad():
        for module in [*adapter.after_double.values(), *adapter.after_single.values()]:
            module.to_out.weight.normal_(0, std)
    return adapter
