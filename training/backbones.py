"""A checkpoint in diffusers' folder layout, as the training scripts need it: FLUX.1 (and Kontext), FLUX.2
(klein, dev), Qwen-Image (and its Edit models) or SD3.

``<model>/model_index.json`` names the pipeline; the transformer, VAE and text encoders are read from
their sub-folders with diffusers' own loaders (safetensors). Latents are stored as each pipeline feeds
them to its transformer before packing: FLUX.1 / SD3 ``(latent - shift_factor) * scaling_factor``;
FLUX.2 its 2x2-patchified latents normalised by the VAE's batch-norm statistics; Qwen-Image its
single-frame latents normalised by the VAE's ``latents_mean`` / ``latents_std``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from ..models.errors import GenAffectInputError


@dataclass(frozen=True)
class Pipeline:
    """A diffusers pipeline the adapter trains for: its family (``models/backbones.py``), whether its
    transformer takes reference latents (an instruction editor) and whether it is trained so by default."""

    family: str
    takes_references: bool = False
    edits_by_default: bool = False


PIPELINES = {
    "FluxPipeline": Pipeline("flux"),
    "FluxKontextPipeline": Pipeline("flux", takes_references=True, edits_by_default=True),
    "Flux2Pipeline": Pipeline("flux2", takes_references=True, edits_by_default=True),
    "Flux2KleinPipeline": Pipeline("flux2", takes_references=True, edits_by_default=True),
    "QwenImagePipeline": Pipeline("qwen_image"),
    "QwenImageEditPipeline": Pipeline("qwen_image", takes_references=True, edits_by_default=True),
    "QwenImageEditPlusPipeline": Pipeline("qwen_image", takes_references=True, edits_by_default=True),
    "StableDiffusion3Pipeline": Pipeline("sd3"),
}
TRANSFORMERS = {"flux": "FluxTransformer2DModel", "flux2": "Flux2Transformer2DModel",
                "qwen_image": "QwenImageTransformer2DModel", "sd3": "SD3Transformer2DModel"}
VAES = {"flux": "AutoencoderKL", "flux2": "AutoencoderKLFlux2", "qwen_image": "AutoencoderKLQwenImage",
        "sd3": "AutoencoderKL"}


def pipeline_name(model_dir: str) -> str:
    index = os.path.join(model_dir, "model_index.json")
    if not os.path.isfile(index):
        raise FileNotFoundError(f"{index} is missing: give the folder of a diffusers checkpoint (e.g. a download of "
                                "black-forest-labs/FLUX.2-klein-4B), not a single .safetensors file.")
    with open(index) as handle:
        name = json.load(handle).get("_class_name", "")
    if name not in PIPELINES:
        raise ValueError(f"{model_dir} holds a {name or 'unknown'} pipeline; the adapter trains on "
                         f"{', '.join(PIPELINES)}.")
    return name


def pipeline_of(model_dir: str) -> Pipeline:
    return PIPELINES[pipeline_name(model_dir)]


def family_of(model_dir: str) -> str:
    return pipeline_of(model_dir).family


def edit_setting(model_dir: str, choice: str = "auto") -> bool:
    """Whether to train in the edit setting (a reference photo as the transformer's reference latents):
    ``choice`` "edit", "generate" or "auto" (the pipeline's default)."""
    pipeline = pipeline_of(model_dir)
    if choice == "auto":
        return pipeline.edits_by_default
    if choice == "edit" and not pipeline.takes_references:
        raise GenAffectInputError(f"{pipeline_name(model_dir)} ({model_dir}) takes no reference image, so it cannot "
                                  "be trained in the edit setting; use --setting generate, or an editor's checkpoint "
                                  "(FLUX.1 Kontext, FLUX.2, Qwen-Image-Edit).")
    return choice == "edit"


def load_transformer(model_dir: str, dtype=torch.bfloat16):
    import diffusers

    kind = getattr(diffusers, TRANSFORMERS[family_of(model_dir)])
    return kind.from_pretrained(model_dir, subfolder="transformer", torch_dtype=dtype)


def load_vae(model_dir: str, dtype=torch.bfloat16):
    """The checkpoint's VAE alone (the trainer's sample grids need no text encoder)."""
    import diffusers

    return getattr(diffusers, VAES[family_of(model_dir)]).from_pretrained(model_dir, subfolder="vae", torch_dtype=dtype)


def load_pipeline_without_transformer(model_dir: str, dtype=torch.bfloat16):
    import diffusers

    return getattr(diffusers, pipeline_name(model_dir)).from_pretrained(model_dir, transformer=None, torch_dtype=dtype)


def latent_codec(family: str, vae):
    """(encode, decode) between pixels (B, 3, H, W) in [-1, 1] and the latents the trainer stores."""
    if family == "flux2":
        mean = vae.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)

        def encode(pixels):
            latents = vae.encode(pixels).latent_dist.mode()
            b, c, h, w = latents.shape  # 2x2 patches, as Flux2Pipeline._patchify_latents
            latents = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
            latents = latents.reshape(b, c * 4, h // 2, w // 2)
            return (latents - mean.to(latents)) / std.to(latents)

        def decode(latents):
            latents = latents * std.to(latents) + mean.to(latents)
            b, c, h, w = latents.shape
            latents = latents.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)
            return vae.decode(latents).sample

        return encode, decode
    if family == "qwen_image":  # a video VAE: one frame
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1)

        def encode(pixels):
            latents = vae.encode(pixels.unsqueeze(2)).latent_dist.mode()[:, :, 0]
            return (latents - mean.to(latents)) / std.to(latents)

        def decode(latents):
            return vae.decode((latents * std.to(latents) + mean.to(latents)).unsqueeze(2)).sample[:, :, 0]

        return encode, decode
    shift, scale = vae.config.shift_factor or 0.0, vae.config.scaling_factor
    return (lambda pixels: (vae.encode(pixels).latent_dist.mode() - shift) * scale,
            lambda latents: vae.decode(latents / scale + shift).sample)


def text_encoder(family: str, pipe, device):
    """captions -> {"prompt_embeds" (U, T, D)[, "pooled_prompt_embeds" (U, P)][, "prompt_mask" (U, T)]}.

    Qwen-Image-Edit's text encoder also sees the reference photo at inference; the shards hold the
    captions' text-only embeddings (README, "Training a Gen-AFFECT adapter")."""
    def encode(captions: list[str]) -> dict:
        if family == "flux":
            embeds, pooled, _ = pipe.encode_prompt(prompt=captions, prompt_2=None, device=device)
            return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if family == "sd3":
            embeds, _, pooled, _ = pipe.encode_prompt(prompt=captions, prompt_2=None, prompt_3=None, device=device,
                                                      do_classifier_free_guidance=False)
            return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if family == "flux2":
            return {"prompt_embeds": pipe.encode_prompt(prompt=captions, device=device)[0]}
        embeds, mask = pipe.encode_prompt(prompt=captions, device=device)  # the mask is None when nothing is padded
        return {"prompt_embeds": embeds,
                "prompt_mask": torch.ones(embeds.shape[:2], dtype=torch.int64) if mask is None else mask}

    return encode


def decoder(family: str, vae, device):
    """latents as stored -> pixels (B, 3, H, W) in [-1, 1], for the sample grids."""
    vae = vae.to(device)
    to_pixels = latent_codec(family, vae)[1]

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        return to_pixels(latents.to(device, vae.dtype)).float()

    return decode


def encoders(pipe, family: str, device) -> tuple:
    """(encode_images, encode_text, decode) for the dataset builder."""
    vae = pipe.vae.to(device)
    to_latents = latent_codec(family, vae)[0]
    embed = text_encoder(family, pipe, device)

    @torch.no_grad()
    def encode_images(pixels: torch.Tensor) -> torch.Tensor:
        return to_latents(pixels.to(device, vae.dtype)).float().cpu()

    @torch.no_grad()
    def encode_text(captions: list[str]) -> dict:
        return {key: value.cpu() if key == "prompt_mask" else value.float().cpu()
                for key, value in embed(captions).items()}

    return encode_images, encode_text, decoder(family, vae, device)
