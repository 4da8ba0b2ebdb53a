"""The trainer's half of each family record (``models/generation/backbones.py``): which diffusers pipelines belong
to the family, its VAE class, how latents are stored (the latent codec), how captions are encoded (the text call)
and how its transformer is called on stored latents (the transformer call), each as its diffusers pipeline does it.

One ``TrainingFamily`` per trainable family, keyed by the record's name; the record itself holds what ComfyUI
hosting needs too (the diffusers transformer class, block attributes, patch size). Adding a family is one record
there, one ``TrainingFamily`` here and a tiny test model (docs/families.md). diffusers is imported by the caller
(training/backbones.py loads the classes named here), never at import time.

Latents are stored as each pipeline feeds them to its transformer before packing: FLUX.1 / SD3
``(latent - shift_factor) * scaling_factor``; FLUX.2 its 2x2-patchified latents normalised by the VAE's batch-norm
statistics; Qwen-Image its single-frame latents normalised by the VAE's ``latents_mean`` / ``latents_std``. An
editor's reference latents (another photo of the person) are packed the same way and appended after the generated
tokens, with the positions its pipeline gives them: FLUX.1 Kontext index 1, FLUX.2 time offset 10, Qwen-Image a
second entry of ``img_shapes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .latent_packing import grid_ids


@dataclass(frozen=True)
class TransformerCall:
    """One call of a family's transformer on stored latents, prepared by ``diffusers_call.velocity``."""

    transformer: torch.nn.Module
    hidden: torch.Tensor | None  # packed [generated ; reference] tokens in the transformer's dtype; None: not packed
    noisy: torch.Tensor  # (B, C, h, w) as stored
    references: torch.Tensor | None  # an editor's reference latents (B, C, h', w'), or None
    text: torch.Tensor  # prompt embeddings in the transformer's dtype
    t: torch.Tensor  # times in [0, 1]
    distilled: torch.Tensor | None  # FLUX's distilled guidance, where the transformer embeds one
    batch: dict
    patch: int  # the family's latent patch (its record's patch_size)

    @property
    def dtype(self):
        return self.transformer.dtype

    @property
    def device(self):
        return self.noisy.device

    def grid(self, latents: torch.Tensor) -> tuple[int, int]:
        """Rows and columns of patches of ``latents``."""
        return latents.shape[-2] // self.patch, latents.shape[-1] // self.patch


@dataclass(frozen=True)
class TrainingFamily:
    """How the trainer reads one family with diffusers."""

    name: str  # the family's record in models/generation/backbones.py
    vae: str  # diffusers class of its VAE
    generators: tuple[str, ...]  # diffusers pipeline classes that generate from text
    editors: tuple[str, ...]  # pipeline classes of instruction editors: they take reference latents, edit by default
    latent_codec: Callable  # vae -> (encode, decode) between pixels (B, 3, H, W) in [-1, 1] and stored latents
    encode_text: Callable  # (pipe, captions, device) -> {"prompt_embeds"[, "pooled_prompt_embeds"][, "prompt_mask"]}
    call: Callable  # TransformerCall -> the transformer's output (tokens when packed, else latents)
    packs: bool = True  # the pipeline packs latents into tokens (SD3's transformer patches them itself)


def scaled_codec(vae):
    """FLUX.1 and SD3: ``(latent - shift_factor) * scaling_factor`` of the VAE's mode."""
    shift, scale = vae.config.shift_factor or 0.0, vae.config.scaling_factor
    return (lambda pixels: (vae.encode(pixels).latent_dist.mode() - shift) * scale,
            lambda latents: vae.decode(latents / scale + shift).sample)


def flux2_codec(vae):
    """FLUX.2: 2x2-patchified latents (as Flux2Pipeline._patchify_latents) normalised by the VAE's batch norm."""
    mean = vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)

    def encode(pixels):
        latents = vae.encode(pixels).latent_dist.mode()
        b, c, h, w = latents.shape
        latents = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        latents = latents.reshape(b, c * 4, h // 2, w // 2)
        return (latents - mean.to(latents)) / std.to(latents)

    def decode(latents):
        latents = latents * std.to(latents) + mean.to(latents)
        b, c, h, w = latents.shape
        latents = latents.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)
        return vae.decode(latents).sample

    return encode, decode


def qwen_image_codec(vae):
    """Qwen-Image: one frame of its video VAE, normalised by ``latents_mean`` / ``latents_std``."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1)

    def encode(pixels):
        latents = vae.encode(pixels.unsqueeze(2)).latent_dist.mode()[:, :, 0]
        return (latents - mean.to(latents)) / std.to(latents)

    def decode(latents):
        return vae.decode((latents * std.to(latents) + mean.to(latents)).unsqueeze(2)).sample[:, :, 0]

    return encode, decode


def flux_text(pipe, captions, device) -> dict:
    embeds, pooled, _ = pipe.encode_prompt(prompt=captions, prompt_2=None, device=device)
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


def flux2_text(pipe, captions, device) -> dict:
    return {"prompt_embeds": pipe.encode_prompt(prompt=captions, device=device)[0]}


def qwen_image_text(pipe, captions, device) -> dict:
    """Qwen-Image-Edit's text encoder also sees the reference photo at inference; the shards hold the captions'
    text-only embeddings (docs/training.md)."""
    embeds, mask = pipe.encode_prompt(prompt=captions, device=device)  # the mask is None when nothing is padded
    return {"prompt_embeds": embeds,
            "prompt_mask": torch.ones(embeds.shape[:2], dtype=torch.int64) if mask is None else mask}


def sd3_text(pipe, captions, device) -> dict:
    embeds, _, pooled, _ = pipe.encode_prompt(prompt=captions, prompt_2=None, prompt_3=None, device=device,
                                              do_classifier_free_guidance=False)
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


def flux_call(c: TransformerCall):
    ids = [grid_ids(*c.grid(c.noisy), 0, 3, c.device)]
    if c.references is not None:
        ids.append(grid_ids(*c.grid(c.references), 1, 3, c.device))
    return c.transformer(hidden_states=c.hidden, timestep=c.t.to(c.dtype), guidance=c.distilled,
                         pooled_projections=c.batch["pooled_prompt_embeds"].to(c.dtype), encoder_hidden_states=c.text,
                         txt_ids=torch.zeros(c.text.shape[1], 3, device=c.device), img_ids=torch.cat(ids),
                         return_dict=False)[0]


def flux2_call(c: TransformerCall):
    ids = [grid_ids(*c.grid(c.noisy), 0, 4, c.device)]
    if c.references is not None:
        ids.append(grid_ids(*c.grid(c.references), 10, 4, c.device))
    text_ids = torch.zeros(c.text.shape[1], 4, device=c.device)
    text_ids[:, 3] = torch.arange(c.text.shape[1], device=c.device)
    return c.transformer(hidden_states=c.hidden, timestep=c.t.to(c.dtype), guidance=c.distilled,
                         encoder_hidden_states=c.text, txt_ids=text_ids, img_ids=torch.cat(ids), return_dict=False)[0]


def qwen_image_call(c: TransformerCall):
    shapes = [(1, *c.grid(c.noisy))]
    if c.references is not None:
        shapes.append((1, *c.grid(c.references)))
    return c.transformer(hidden_states=c.hidden, timestep=c.t.to(c.dtype), guidance=c.distilled,
                         encoder_hidden_states=c.text, encoder_hidden_states_mask=c.batch["prompt_mask"],
                         img_shapes=[shapes] * c.noisy.shape[0], return_dict=False)[0]


def sd3_call(c: TransformerCall):
    return c.transformer(hidden_states=c.noisy.to(c.dtype), timestep=(c.t * 1000).to(c.dtype),
                         encoder_hidden_states=c.text, pooled_projections=c.batch["pooled_prompt_embeds"].to(c.dtype),
                         return_dict=False)[0]


TRAINING_FAMILIES = {family.name: family for family in (
    TrainingFamily("flux", "AutoencoderKL", ("FluxPipeline",), ("FluxKontextPipeline",), scaled_codec, flux_text,
                   flux_call),
    TrainingFamily("flux2", "AutoencoderKLFlux2", (), ("Flux2Pipeline", "Flux2KleinPipeline"), flux2_codec,
                   flux2_text, flux2_call),
    TrainingFamily("qwen_image", "AutoencoderKLQwenImage", ("QwenImagePipeline",),
                   ("QwenImageEditPipeline", "QwenImageEditPlusPipeline"), qwen_image_codec, qwen_image_text,
                   qwen_image_call),
    TrainingFamily("sd3", "AutoencoderKL", ("StableDiffusion3Pipeline",), (), scaled_codec, sd3_text, sd3_call,
                   packs=False),
)}

# Families that host the adapter in ComfyUI but have no trainer call yet, and why.
NOT_TRAINED = {
    "chroma": "its pipeline (ChromaPipeline: T5 text with a padding mask, no pooled vector) has no trainer call yet; "
              "adapters for Chroma are not trained by this pack",
}


def training_family(name: str) -> TrainingFamily:
    """The trainer's record of family ``name``; a family it cannot train is refused, saying which it can."""
    if name in TRAINING_FAMILIES:
        return TRAINING_FAMILIES[name]
    why = f" ({NOT_TRAINED[name]})" if name in NOT_TRAINED else ""
    raise NotImplementedError(f"training on {name} is not built{why}; the trainer trains "
                              f"{', '.join(TRAINING_FAMILIES)}.")
