"""Tiny diffusers FLUX and SD3 transformers, and the Gen-AFFECT adapter hosted on them by forward hooks
(the post-block residual, as the trainer hosts it on diffusers models)."""

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


def backbone_sizes(model) -> dict:
    """family, hidden size and block counts of a diffusers FLUX / SD3 transformer."""
    config = model.config
    hidden = config.num_attention_heads * config.attention_head_dim
    if type(model).__name__.startswith("Flux"):
        return dict(family="flux", hidden_size=hidden, double_blocks=config.num_layers,
                    single_blocks=config.num_single_layers)
    return dict(family="sd3", hidden_size=hidden, double_blocks=config.num_layers, single_blocks=0)


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


def hook_adapter(model, adapter, identity_tokens, expression_tokens, identity_strength=1.0, expression_strength=1.0):
    """Add the adapter's residual after its blocks; returns the hook handles (remove them to unpatch)."""
    handles = []
    groups = [("double", model.transformer_blocks)]
    if hasattr(model, "single_transformer_blocks"):
        groups.append(("single", model.single_transformer_blocks))
    for kind, blocks in groups:
        for index, block in enumerate(blocks):
            module = adapter.block(kind, index)
            if module is None:
                continue

            def after(_, __, output, module=module):
                context, image = output
                return context, image + module.delta(image, identity_tokens, expression_tokens,
                                                     identity_strength, expression_strength)

            handles.append(block.register_forward_hook(after))
    return handles
