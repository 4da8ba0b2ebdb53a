"""What every patch needs from a ComfyUI model: which family it is and its geometry, read where the family's
record says (``models/generation/backbones.py``), the noise range a patch acts in, the layout of a model call's
batch and tokens, and ComfyUI's attention."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ...models.errors import GenAffectInputError
from ...models.generation.backbones import Backbone, TokenLayout, comfy_family


def class_paths(obj) -> list[str]:
    """``module.Class`` of ``obj``'s class and its bases, most derived first."""
    return [f"{cls.__module__}.{cls.__name__}" for cls in type(obj).__mro__]


def backbone_of(model) -> Backbone:
    """The family of a ComfyUI MODEL (a ModelPatcher), refused by name when GenAffect does not know it."""
    config = getattr(model.model, "model_config", None)
    image_model = (getattr(config, "unet_config", None) or {}).get("image_model")
    return comfy_family(class_paths(model.get_model_object("diffusion_model")), image_model)


@dataclass(frozen=True)
class DiTGeometry:
    """A loaded ComfyUI diffusion transformer's sizes (what an adapter is made for), latent patch and learned tokens
    before the image's, read from the attributes its family's record names."""

    backbone: Backbone
    hidden_size: int
    double_blocks: int
    single_blocks: int
    patch_size: int
    registers: int

    def sizes(self) -> dict:
        """family, hidden size and block counts, as an adapter's configuration states them."""
        return dict(family=self.backbone.name, hidden_size=self.hidden_size, double_blocks=self.double_blocks,
                    single_blocks=self.single_blocks)


def dit_geometry(model, backbone: Backbone) -> DiTGeometry:
    """The geometry of ComfyUI MODEL ``model``, a diffusion transformer of family ``backbone``. The patch is the loaded
    model's own (a variant may patch differently from the family's checkpoints: Chroma Radiance patches pixels)."""
    diffusion_model = model.get_model_object("diffusion_model")
    single = getattr(diffusion_model, backbone.single_blocks) if backbone.single_blocks else ()
    return DiTGeometry(
        backbone=backbone, hidden_size=getattr(diffusion_model, backbone.comfy_width),
        double_blocks=len(getattr(diffusion_model, backbone.double_blocks)), single_blocks=len(single),
        patch_size=diffusion_model.patch_size,
        registers=getattr(diffusion_model, backbone.comfy_registers) if backbone.comfy_registers else 0)


def require(backbone: Backbone, kind: str, what: str, advice: str) -> None:
    """Refuse ``backbone`` unless it is of ``kind`` ("unet" or "dit"), saying what needs it and what to do."""
    if backbone.kind != kind:
        raise GenAffectInputError(f"{what}; this MODEL is {backbone.title}. {advice}")


def sigma_range(model, start_percent: float, end_percent: float) -> tuple[float, float]:
    """The noise levels (high, low) between which a patch acts, from a start/end share of the schedule."""
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise GenAffectInputError(
            f"start and end percent must satisfy 0 <= start <= end <= 1; got {start_percent} and {end_percent}."
        )
    model_sampling = model.get_model_object("model_sampling")
    return model_sampling.percent_to_sigma(start_percent), model_sampling.percent_to_sigma(end_percent)


def in_sigma_range(options: dict, sigma_range: tuple[float, float]) -> bool:
    """Whether the model call described by ``options`` (its ``sigmas``) lies in (high, low) ``sigma_range``;
    a call without sigmas counts as inside."""
    sigmas = options.get("sigmas")
    if sigmas is None:
        return True
    high, low = sigma_range
    return low <= float(sigmas.flatten()[0]) <= high


def schedule_range_inputs(what: str) -> dict:
    """The start/end share of the sampling schedule between which a patch acts (node inputs)."""
    return {
        "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": f"Where in the sampling schedule {what} starts."}),
        "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Where it stops."}),
    }


def batch_layout(batch: int, options: dict | None) -> tuple[tuple, int]:
    """(ComfyUI's ``cond_or_uncond`` kinds, images per kind) of a model call's batch of ``batch`` rows."""
    kinds = tuple((options or {}).get("cond_or_uncond") or [0])
    if batch % len(kinds):
        raise GenAffectInputError(f"a batch of {batch} does not split into {len(kinds)} conditionings.")
    return kinds, batch // len(kinds)


def image_stream_layout(image_stream_tokens: int, options: dict, text: int = 0) -> TokenLayout:
    """The layout of a DiT block's image stream (``text`` tokens in front where the block joins them):
    ComfyUI appends reference latents after the generated image and records their counts in
    ``reference_image_num_tokens``."""
    references = sum(options.get("reference_image_num_tokens") or ())
    generated = image_stream_tokens - text - references
    if generated <= 0:
        raise GenAffectInputError(
            f"a block's {image_stream_tokens} tokens leave no generated image tokens beside {text} text and "
            f"{references} reference tokens; this model's layout is not one GenAffect knows.")
    return TokenLayout(text=text, generated=generated, references=references)


@functools.cache
def optimized_attention():
    """ComfyUI's attention function, the one its own attention layers call (imported at first use)."""
    from comfy.ldm.modules.attention import optimized_attention as attention

    return attention


def layer_attention(extra_options: dict):
    """``attention(q, k, v, heads)`` called exactly as ComfyUI's own attention layers call it, for an
    attention replacement given ``extra_options``."""
    optimized = optimized_attention()

    def attention(q, k, v, heads, **shape):
        return optimized(q, k, v, heads, attn_precision=extra_options.get("attn_precision"),
                         transformer_options=extra_options, **shape)

    return attention


def companion_patcher(module, model):
    """The ModelPatcher through which ComfyUI moves ``module`` (an adapter) to the GPU with ``model`` and offloads
    it with it. One per module, kept on the module, so the two live and die together: ComfyUI reports a patcher
    that dies while its module lives on (here: in the loader's cached output) as a memory leak."""
    import comfy.model_patcher

    patcher = getattr(module, "_comfy_patcher", None)
    if patcher is None or (patcher.load_device, patcher.offload_device) != (model.load_device, model.offload_device):
        patcher = comfy.model_patcher.ModelPatcher(module, load_device=model.load_device,
                                                   offload_device=model.offload_device)
        module._comfy_patcher = patcher
    return patcher
