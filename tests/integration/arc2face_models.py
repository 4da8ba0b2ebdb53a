"""Write a full-size, randomly initialised Arc2Face in its published layout, and an SD1.5 VAE.

Run with ComfyUI's Python (it needs diffusers and transformers): ``python arc2face_models.py <models dir>``.

- arc2face/arc2face/: diffusers ``UNet2DConditionModel`` with SD1.5's configuration, fp32 as published
  (3.44 GB), and its config.json;
- arc2face/encoder/: CLIP ViT-L/14 text encoder as ``pytorch_model.bin`` (a pickle, as published)
  and config.json;
- arc2face/exp_adapter/exp_adapter.bin: an Expression Adapter in the published pickle layout
  (FLAME-55 -> MLP -> 4 tokens of 768, to_k_ip/to_v_ip for the 16 cross-attention layers);
- arc2face/ref_adapter/pytorch_lora_weights.safetensors: a Reference Adapter LoRA on every
  self-attention projection, written in the layout diffusers' LoRA writer produces;
- vae/sd15_vae_random.safetensors: diffusers ``AutoencoderKL`` with SD1.5's configuration.
"""

from __future__ import annotations

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "support"))  # tiny_sd15

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
)


def write_unet(folder: str):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(11)
    unet = UNet2DConditionModel(**SD15_UNET)
    unet.save_pretrained(folder)
    return unet


def write_encoder(folder: str) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                            max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    torch.manual_seed(12)
    model = CLIPTextModel(config)
    os.makedirs(folder, exist_ok=True)
    config.save_pretrained(folder)
    # The published file names the tower "text_model."; transformers 5 drops it in state_dict().
    state = {k if k.startswith("text_model.") else "text_model." + k: v.contiguous()
             for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(folder, "pytorch_model.bin"))


def write_adapter(path: str, widths: list[int]) -> None:
    from tiny_sd15 import published_adapter

    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(published_adapter(widths, kind="mlp", tokens=4, context=768, seed=13), path)


def write_reference_lora(path: str, unet) -> None:
    from safetensors.torch import save_file

    from tiny_sd15 import published_reference_lora

    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(published_reference_lora(unet, rank=128, seed=15), path)  # the published size


def write_vae(path: str) -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    torch.manual_seed(14)
    vae = AutoencoderKL(**SD15_VAE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in vae.state_dict().items()}, path)


def main(models: str) -> None:
    root = os.path.join(models, "arc2face")
    from tiny_sd15 import cross_attention_widths

    unet = write_unet(os.path.join(root, "arc2face"))
    write_encoder(os.path.join(root, "encoder"))
    write_adapter(os.path.join(root, "exp_adapter", "exp_adapter.bin"), cross_attention_widths(unet))
    write_reference_lora(os.path.join(root, "ref_adapter", "pytorch_lora_weights.safetensors"), unet)
    write_vae(os.path.join(models, "vae", "sd15_vae_random.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
