"""The diffusion backbones GenAffect hosts its patches on: one record per family, read by everything
that needs to know "which model is this?" (consistent attention, the DiT adapter and its nodes, the
diffusers host used by training and parity tests, the trainer, the benchmarks).

A record says how ComfyUI's class and diffusers' class of the family are recognised, how the tokens
of its joint attention are laid out (text first; reference-image tokens, as instruction editors use
them, appended after the generated image's), which blocks ComfyUI lets a node replace, where ComfyUI's
model keeps its width, the family's latent patch, and how the DiT adapter is hosted on it. The trainer's
half of a record (pipelines, VAE, latent codec, text and transformer calls) is ``training/families.py``,
keyed by the same name. Adding a family is one record here, its trainer record there, a layout if its
tokens are ordered differently, and a tiny test model on each side (docs/families.md).

No ComfyUI or diffusers import: their classes are named by module path or class name, as strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import GenAffectInputError


@dataclass(frozen=True)
class TokenLayout:
    """Where each kind of token sits in one sequence of a family's joint attention.

    ComfyUI's DiTs put the text first: ``[text ; generated image ; reference images]``. Only the
    generated image's tokens take part in consistent attention and receive the adapter's residual."""

    text: int
    generated: int
    references: int = 0

    @property
    def length(self) -> int:
        return self.text + self.generated + self.references

    @property
    def generated_slice(self) -> slice:
        return slice(self.text, self.text + self.generated)

    @property
    def reference_slice(self) -> slice:
        return slice(self.text + self.generated, self.length)


def patch_tokens(shape, patch_size: int) -> int:
    """Tokens of one latent (…, [frames,] height, width) cut into ``patch_size`` patches, padded up as
    ComfyUI's and diffusers' patching do; a 5-D latent (Qwen-Image) counts its frames too."""
    *_, height, width = shape
    frames = shape[-3] if len(shape) == 5 else 1
    return frames * math.ceil(height / patch_size) * math.ceil(width / patch_size)


@dataclass(frozen=True)
class Backbone:
    """One diffusion family as GenAffect hosts it."""

    name: str  # stored in adapter files and used in messages
    title: str  # what users call it
    kind: str  # "unet" (SD1.x/SDXL self-attention) or "dit" (joint text-image attention)
    comfy_classes: tuple[str, ...]  # "module.Class" of ComfyUI's diffusion model (subclasses count)
    comfy_image_model: str | None = None  # ComfyUI's unet_config["image_model"], where one class serves several
    diffusers_class: str | None = None  # the diffusers transformer class (training, parity tests)
    double_blocks: str = ""  # ComfyUI attribute holding the blocks replaced as ("double_block", i)
    single_blocks: str | None = None  # ... as ("single_block", i); None: the family has none
    diffusers_double: str = "transformer_blocks"
    diffusers_single: str | None = None
    diffusers_single_joined: bool = False  # diffusers' single blocks return [text ; image] as one tensor
    adapter_every: tuple[int, int] = (2, 4)  # the DiT adapter after every n-th double / single block
    distilled_guidance: bool = False  # reads FLUX's distilled guidance from its prompts (Flux Guidance)
    text_mask: bool = False  # honours a prompt padding mask in its conditioning ("attention_mask")
    # DiTs: latent pixels per token side as the family's checkpoints come (ComfyUI's patch_size, the diffusers
    # pipelines' packing; a ComfyUI variant may differ - Chroma Radiance patches pixels - so ComfyUI hosts read
    # the loaded model's own patch_size)
    patch_size: int | None = None
    comfy_width: str = "hidden_size"  # ComfyUI diffusion-model attribute holding the width of its blocks
    comfy_registers: str | None = None  # ... counting learned tokens its attention puts before the image's

    @property
    def hosts_adapter(self) -> bool:
        return self.kind == "dit"


BACKBONES = (
    Backbone("sd_unet", "SD1.x / SDXL UNet", "unet",
             ("comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel",)),
    Backbone("flux", "FLUX.1 (dev, schnell, Kontext)", "dit", ("comfy.ldm.flux.model.Flux",), "flux",
             "FluxTransformer2DModel", "double_blocks", "single_blocks",
             diffusers_single="single_transformer_blocks", distilled_guidance=True, patch_size=2),
    Backbone("flux2", "FLUX.2 (klein, dev)", "dit", ("comfy.ldm.flux.model.Flux",), "flux2",
             "Flux2Transformer2DModel", "double_blocks", "single_blocks",
             diffusers_single="single_transformer_blocks", diffusers_single_joined=True, adapter_every=(1, 4),
             distilled_guidance=True, patch_size=1),
    Backbone("qwen_image", "Qwen-Image (and Qwen-Image-Edit 2509/2511)", "dit",
             ("comfy.ldm.qwen_image.model.QwenImageTransformer2DModel",), "qwen_image",
             "QwenImageTransformer2DModel", "transformer_blocks", adapter_every=(3, 1), text_mask=True, patch_size=2,
             comfy_width="inner_dim"),
    Backbone("chroma", "Chroma", "dit", ("comfy.ldm.chroma.model.Chroma",), "chroma",
             "ChromaTransformer2DModel", "double_blocks", "single_blocks",
             diffusers_single="single_transformer_blocks", patch_size=2),
    Backbone("sd3", "Stable Diffusion 3 / 3.5", "dit", ("comfy.ldm.modules.diffusionmodules.mmdit.MMDiT",), None,
             "SD3Transformer2DModel", "joint_blocks", patch_size=2, comfy_registers="register_length"),
)

# Families ComfyUI runs that GenAffect cannot host, and why (checked in ComfyUI 0.33's code).
REFUSED = {
    "comfy.ldm.lumina.model.NextDiT": (
        "Lumina 2 / Z-Image", "it pads and masks its caption tokens inside every joint attention and offers no "
        "block replacement, so neither the shared tokens nor the adapter's residual can be placed"),
    "comfy.ldm.hidream.model.HiDreamImageTransformer2DModel": (
        "HiDream", "it offers no block replacement and mixes text from four encoders into its attention"),
}

FAMILIES = {backbone.name: backbone for backbone in BACKBONES}
ADAPTER_FAMILIES = tuple(backbone.name for backbone in BACKBONES if backbone.hosts_adapter)


def supported_titles(kind: str | None = None) -> str:
    return ", ".join(b.title for b in BACKBONES if kind is None or b.kind == kind)


def family(name: str) -> Backbone:
    """The record of family ``name`` (as stored in an adapter file), refused with the list when unknown."""
    if name in FAMILIES:
        return FAMILIES[name]
    raise GenAffectInputError(
        f"{name!r} is not a diffusion family GenAffect knows; it knows {', '.join(ADAPTER_FAMILIES)} "
        f"({supported_titles('dit')}).")


def comfy_family(class_paths: list[str], image_model: str | None) -> Backbone:
    """The family of a ComfyUI diffusion model, from its class and its bases (``module.Class``, most
    derived first) and ComfyUI's ``image_model`` name. Unknown or refused families raise, by name."""
    for path in class_paths:
        matches = [b for b in BACKBONES if path in b.comfy_classes]
        if len(matches) > 1:  # one class, several families (FLUX.1 and FLUX.2): ComfyUI's detection decides
            matches = [b for b in matches if b.comfy_image_model == image_model]
        if matches:
            return matches[0]
        if path in REFUSED:
            title, why = REFUSED[path]
            raise GenAffectInputError(f"GenAffect cannot patch {title}: {why}. It works on {supported_titles()}.")
    name = class_paths[0].rsplit(".", 1)[-1] if class_paths else "model"
    raise GenAffectInputError(
        f"this MODEL is a {name} ({image_model or 'no image_model'}), a diffusion family GenAffect does not know. "
        f"It works on {supported_titles()}.")


def diffusers_family(transformer) -> Backbone:
    """The family of a diffusers transformer, by its class."""
    name = type(transformer).__name__
    for backbone in BACKBONES:
        if backbone.diffusers_class == name:
            return backbone
    raise GenAffectInputError(
        f"{name} is not a diffusers transformer GenAffect hosts; it hosts "
        f"{', '.join(b.diffusers_class for b in BACKBONES if b.diffusers_class)}.")


def diffusers_sizes(transformer) -> dict:
    """family, hidden size and block counts of a diffusers transformer (what an adapter is sized for)."""
    backbone = diffusers_family(transformer)
    config = transformer.config
    single = getattr(transformer, backbone.diffusers_single) if backbone.diffusers_single else ()
    return dict(family=backbone.name, hidden_size=config.num_attention_heads * config.attention_head_dim,
                double_blocks=len(getattr(transformer, backbone.diffusers_double)), single_blocks=len(single))
