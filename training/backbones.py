"""A checkpoint in diffusers' folder layout, as the training scripts need it: FLUX.1 (and Kontext), FLUX.2
(klein, dev), Qwen-Image (and its Edit models) or SD3.

``<model>/model_index.json`` names the pipeline, and the pipeline its family (``families.py``); the transformer,
VAE and text encoders are read from their sub-folders with diffusers' own loaders (safetensors), the classes named
by the family's records (``models/generation/backbones.py`` for the transformer, ``families.py`` for the rest).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from ..models.errors import GenAffectInputError
from ..models.generation.backbones import family as family_record
from .families import TRAINING_FAMILIES, training_family


@dataclass(frozen=True)
class Pipeline:
    """A diffusers pipeline the adapter trains for: its family (``models/generation/backbones.py``), whether its
    transformer takes reference latents (an instruction editor) and whether it is trained so by default."""

    family: str
    takes_references: bool = False
    edits_by_default: bool = False


PIPELINES = {name: Pipeline(family.name, takes_references=edits, edits_by_default=edits)
             for family in TRAINING_FAMILIES.values()
             for names, edits in ((family.generators, False), (family.editors, True)) for name in names}


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

    kind = getattr(diffusers, family_record(family_of(model_dir)).diffusers_class)
    return kind.from_pretrained(model_dir, subfolder="transformer", torch_dtype=dtype)


def load_vae(model_dir: str, dtype=torch.bfloat16):
    """The checkpoint's VAE alone (the trainer's sample grids need no text encoder)."""
    import diffusers

    vae = getattr(diffusers, training_family(family_of(model_dir)).vae)
    return vae.from_pretrained(model_dir, subfolder="vae", torch_dtype=dtype)


def load_pipeline_without_transformer(model_dir: str, dtype=torch.bfloat16):
    import diffusers

    return getattr(diffusers, pipeline_name(model_dir)).from_pretrained(model_dir, transformer=None, torch_dtype=dtype)


def latent_codec(family: str, vae):
    """(encode, decode) between pixels (B, 3, H, W) in [-1, 1] and the latents the trainer stores."""
    return training_family(family).latent_codec(vae)


def text_encoder(family: str, pipe, device):
    """captions -> {"prompt_embeds" (U, T, D)[, "pooled_prompt_embeds" (U, P)][, "prompt_mask" (U, T)]}."""
    encode_text = training_family(family).encode_text
    return lambda captions: encode_text(pipe, captions, device)


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
