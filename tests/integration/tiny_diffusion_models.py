"""Write small randomly initialised diffusion models that ComfyUI's own loaders recognise.

Run with ComfyUI's Python from the ComfyUI folder: ``python tiny_diffusion_models.py <models dir>``.
The models are built from ComfyUI's (and transformers') real classes with shrunken sizes where the
loaders read the size from the weights, and full size where they assume it (the CLIP-L text
encoder and the VAE):

- diffusion_models/tiny_sd15.safetensors: SD1.5 UNet layout (320 channels, context 768, 8 heads) with
  two levels and one res block each, so ComfyUI detects it as SD1.5;
- diffusion_models/tiny_flux.safetensors: FLUX.1-dev layout (guidance embedding, RoPE 16/56/56)
  with hidden size 256 (2 heads), 1 double and 2 single blocks, and 768-wide text input so the
  CLIP-L encoder below can condition it;
- text_encoders/clip_l_random.safetensors: CLIP ViT-L/14 text tower (ComfyUI's SD1 config);
- vae/flux_vae_random.safetensors: the 16-channel FLUX autoencoder.
"""

from __future__ import annotations

import os
import sys

import torch
from safetensors.torch import save_file


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """ComfyUI's layers skip weight initialisation: normalisation layers get weight 1 and bias 0,
    everything else small seeded values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for owner in module.modules():
            is_norm = "Norm" in type(owner).__name__
            for name, tensor in owner.named_parameters(recurse=False):
                if is_norm:
                    tensor.fill_(0.0 if name == "bias" else 1.0)
                else:
                    tensor.normal_(0.0, 0.02, generator=generator)
    return module


def save(module: torch.nn.Module, path: str, dtype=torch.float16, prefix: str = "") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tensors = {k if k.startswith(prefix) else prefix + k: v.to(dtype).contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, path)


def tiny_sd15():
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    import comfy.ops

    return UNetModel(
        image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1, 1],
        channel_mult=[1, 2], num_heads=8, use_spatial_transformer=True, transformer_depth=[1, 1],
        transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1], context_dim=768,
        use_linear_in_transformer=False, legacy=False, operations=comfy.ops.disable_weight_init,
    )


def tiny_flux():
    from comfy.ldm.flux.model import Flux
    import comfy.ops

    return Flux(
        in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=768, hidden_size=256, mlp_ratio=4.0,
        num_heads=2, depth=1, depth_single_blocks=2, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
        qkv_bias=True, guidance_embed=True, txt_ids_dims=[], operations=comfy.ops.disable_weight_init,
    )


def clip_l():
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                            max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
    torch.manual_seed(3)
    return CLIPTextModel(config)


def flux_vae():
    from comfy.ldm.models.autoencoder import AutoencodingEngine

    ddconfig = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    return AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": ddconfig},
        decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": ddconfig},
    )


def main(models: str) -> None:
    sys.path.insert(0, os.getcwd())  # ComfyUI's folder
    from comfy.cli_args import args

    args.cpu = True  # as main.py --cpu: these machines may have no GPU
    save(randomise(tiny_sd15(), 1), os.path.join(models, "diffusion_models", "tiny_sd15.safetensors"))
    save(randomise(tiny_flux(), 2), os.path.join(models, "diffusion_models", "tiny_flux.safetensors"))
    # Hugging Face's published CLIP files name the tower "text_model."; transformers 5 drops it in state_dict().
    save(clip_l(), os.path.join(models, "text_encoders", "clip_l_random.safetensors"), prefix="text_model.")
    save(randomise(flux_vae(), 4), os.path.join(models, "vae", "flux_vae_random.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
