"""Write small random instruction-editor models that ComfyUI's own loaders recognise, for the editor workflows.

Run with ComfyUI's Python from the ComfyUI folder: ``python editor_models.py <models dir>``. Built from
ComfyUI's classes, shrunk where its detection reads the size from the weights and full size where it
assumes it:

- diffusion_models/tiny_qwen_image_edit.safetensors: Qwen-Image (full width 3072, text width 3584, as
  ComfyUI's detection assumes) with one block, marked as Edit 2511 (reference latents at timestep zero);
- vae/tiny_qwen_image_vae.safetensors: the Wan 2.1 VAE Qwen-Image uses, 8 channels wide (detected from
  the weights), 16 latent channels;
- loras/PixelSmile-tiny.safetensors: a rank-4 LoRA for that model in PixelSmile's key layout (docs/models.md, PixelSmile);
- diffusion_models/tiny_flux2_klein.safetensors: FLUX.2 (klein layout: no guidance embedding) with hidden
  size 256, 1 double and 2 single blocks, reading 768-wide text so the CLIP-L of tiny_diffusion_models.py
  conditions it;
- vae/tiny_flux2_vae.safetensors: the FLUX.2 autoencoder (32 latent channels, batch-norm latents), full
  width as ComfyUI assumes.
"""

from __future__ import annotations

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_diffusion_models import randomise, save  # noqa: E402

PIXELSMILE_MODULES = {  # module -> (LoRA naming, in, out) as PixelSmile's train.py saves them (inferred; docs/models.md)
    "attn.to_q": ("lora.down", 3072, 3072), "attn.to_k": ("lora.down", 3072, 3072),
    "attn.to_v": ("lora.down", 3072, 3072), "attn.to_out.0": ("lora.down", 3072, 3072),
    "attn.add_q_proj": ("lora_A", 3072, 3072), "attn.add_k_proj": ("lora_A", 3072, 3072),
    "attn.add_v_proj": ("lora_A", 3072, 3072), "attn.to_add_out": ("lora_A", 3072, 3072),
    "img_mlp.net.0.proj": ("lora_A", 3072, 12288), "img_mlp.net.2": ("lora_A", 12288, 3072),
    "txt_mlp.net.0.proj": ("lora_A", 3072, 12288), "txt_mlp.net.2": ("lora_A", 12288, 3072),
}


def qwen_image():
    import comfy.ops
    from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(in_channels=64, out_channels=16, num_layers=1,
                                       operations=comfy.ops.disable_weight_init)


def flux2(context: int):
    import comfy.ops
    from comfy.ldm.flux.model import Flux

    return Flux(in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=context, hidden_size=256,
                mlp_ratio=3.0, num_heads=2, depth=1, depth_single_blocks=2, axes_dim=[32, 32, 32, 32], theta=2000,
                patch_size=1, qkv_bias=False, guidance_embed=False, txt_ids_dims=[3], global_modulation=True,
                mlp_silu_act=True, ops_bias=False, default_ref_method="index", ref_index_scale=10.0,
                operations=comfy.ops.disable_weight_init)


def qwen_vae():
    from comfy.ldm.wan.vae import WanVAE

    return WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                  temperal_downsample=[False, True, True], dropout=0.0)


def flux2_vae():
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 32, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
                "batch_norm_latent": True}
    return AutoencoderKL(ddconfig=ddconfig, embed_dim=32)


def pixelsmile_lora(blocks: int, rank: int = 4, seed: int = 12) -> dict:
    """A LoRA in PixelSmile's layout: diffusers keys under ``transformer.``, the attention projections as
    lora.down/up and the rest as lora_A/B (rank 64 in the published file)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for block in range(blocks):
        for module, (naming, fan_in, fan_out) in PIXELSMILE_MODULES.items():
            down, up = ("lora.down", "lora.up") if naming == "lora.down" else ("lora_A", "lora_B")
            stem = f"transformer.transformer_blocks.{block}.{module}"
            state[f"{stem}.{down}.weight"] = (torch.randn(rank, fan_in, generator=g) * 0.01).to(torch.bfloat16)
            state[f"{stem}.{up}.weight"] = (torch.randn(fan_out, rank, generator=g) * 0.01).to(torch.bfloat16)
    return state


def main(models: str) -> None:
    sys.path.insert(0, os.getcwd())  # ComfyUI's folder
    from comfy.cli_args import args

    args.cpu = True
    qwen = randomise(qwen_image(), 21).state_dict()
    qwen["__index_timestep_zero__"] = torch.tensor([])  # ComfyUI's mark of Qwen-Image-Edit-2511
    os.makedirs(os.path.join(models, "diffusion_models"), exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in qwen.items()},
              os.path.join(models, "diffusion_models", "tiny_qwen_image_edit.safetensors"))
    save(randomise(qwen_vae(), 22), os.path.join(models, "vae", "tiny_qwen_image_vae.safetensors"))
    os.makedirs(os.path.join(models, "loras"), exist_ok=True)
    save_file(pixelsmile_lora(1), os.path.join(models, "loras", "PixelSmile-tiny.safetensors"))
    save(randomise(flux2(768), 23), os.path.join(models, "diffusion_models", "tiny_flux2_klein.safetensors"))
    save(randomise(flux2_vae(), 24), os.path.join(models, "vae", "tiny_flux2_vae.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
