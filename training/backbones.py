"""A FLUX or SD3 checkpoint in diffusers' folder layout, as the training scripts need it.

``<model>/model_index.json`` names the pipeline; the transformer, VAE and text encoders are read from
their sub-folders with diffusers' own loaders (safetensors). Latents are normalised as the pipelines do:
``(latent - shift_factor) * scaling_factor``.
"""

from __future__ import annotations

import json
import os

import torch

PIPELINES = {"FluxPipeline": "flux", "StableDiffusion3Pipeline": "sd3"}


def family_of(model_dir: str) -> str:
    index = os.path.join(model_dir, "model_index.json")
    if not os.path.isfile(index):
        raise FileNotFoundError(f"{index} is missing: give the folder of a diffusers FLUX.1 or SD3 checkpoint "
                                "(e.g. a download of black-forest-labs/FLUX.1-dev), not a single .safetensors file.")
    with open(index) as handle:
        name = json.load(handle).get("_class_name", "")
    if name not in PIPELINES:
        raise ValueError(f"{model_dir} holds a {name or 'unknown'} pipeline; the adapter trains on "
                         f"{' or '.join(PIPELINES)}.")
    return PIPELINES[name]


def load_transformer(model_dir: str, dtype=torch.bfloat16):
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    kind = FluxTransformer2DModel if family_of(model_dir) == "flux" else SD3Transformer2DModel
    return kind.from_pretrained(model_dir, subfolder="transformer", torch_dtype=dtype)


def load_pipeline_without_transformer(model_dir: str, dtype=torch.bfloat16):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    kind = FluxPipeline if family_of(model_dir) == "flux" else StableDiffusion3Pipeline
    return kind.from_pretrained(model_dir, transformer=None, torch_dtype=dtype)


def encoders(pipe, device) -> tuple:
    """(encode_images, encode_text, decode) for the dataset builder and the sample grids."""
    vae = pipe.vae.to(device)
    shift, scale = vae.config.shift_factor or 0.0, vae.config.scaling_factor

    @torch.no_grad()
    def encode_images(pixels: torch.Tensor) -> torch.Tensor:
        latents = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mode()
        return ((latents - shift) * scale).float().cpu()

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        return vae.decode(latents.to(device, vae.dtype) / scale + shift).sample.float()

    @torch.no_grad()
    def encode_text(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if type(pipe).__name__ == "FluxPipeline":
            embeds, pooled, _ = pipe.encode_prompt(prompt=captions, prompt_2=None, device=device)
        else:
            embeds, _, pooled, _ = pipe.encode_prompt(prompt=captions, prompt_2=None, prompt_3=None, device=device,
                                                      do_classifier_free_guidance=False)
        return embeds.float().cpu(), pooled.float().cpu()

    return encode_images, encode_text, decode
