"""Consistent attention installed on a ComfyUI MODEL clone: SD1.x/SDXL UNets and the diffusion
transformers of ``models/generation/backbones.py`` (FLUX.1 and Kontext, FLUX.2, Qwen-Image and its Edit models,
Chroma, SD3).

How each host is reached (checked on ComfyUI 0.33):
- every architecture: an APPLY_MODEL wrapper runs once per model call and records the call's
  layout (images per set from ``cond_or_uncond``, latent size, text, generated-image and
  reference-image token counts, the step, whether the noise level is in the active range) in a
  copy of ``transformer_options``;
- UNets: an ``attn1`` (self-attention) replacement on each chosen block, given projected q, k, v;
- DiTs: the ``optimized_attention_override`` (q, k, v after RoPE), chained to any override
  already installed. All put the text first: ``[text ; generated image ; reference images]``.
  Only the generated image's tokens lend and borrow; reference images (an editor's photo) keep
  their own attention.

The tensor work is :meth:`ConsistencySettings.share` in ``models/``; this module only finds the
layout and calls it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from ...models.errors import GenAffectInputError
from ...models.generation.attention import from_heads, to_heads
from ...models.generation.backbones import Backbone, TokenLayout, patch_tokens
from ...models.generation.consistent_attention import ConsistencySettings, step_index
from . import patching

LAYOUT_KEY = "genaffect_consistent_layout"
WRAPPER_KEY = "genaffect_consistent_attention"
APPLY_MODEL = "apply_model"  # comfy.patcher_extension.WrappersMP.APPLY_MODEL

UNET_BLOCKS = ("up", "middle and up", "all")


@dataclass
class CallLayout:
    """What one model call looks like, as the attention patches need it."""

    images: int  # images per set (the batch is sets x images: cond, uncond, ...)
    latent_size: tuple[int, int]
    step: int
    active: bool  # the noise level is inside the node's start/end range
    text_tokens: int = 0  # DiTs: tokens before the image tokens
    image_tokens: int = 0  # DiTs: the generated image's tokens
    reference_tokens: int = 0  # DiTs: reference images' tokens, after the generated image's
    chunk_kinds: tuple = (0,)  # cond_or_uncond: which conditioning each set in the batch belongs to
    shared_calls: int = 0  # how many attention calls shared tokens (0 on a DiT means a layout we missed)

    def shares(self, settings: ConsistencySettings) -> bool:
        if not (self.active and self.images > 1 and settings.rate > 0):
            return False
        return settings.groups is None or len(set(settings.groups)) < len(settings.groups)  # someone has a donor


def salt_of(*parts) -> int:
    """A stable number per block, so each block draws its own tokens."""
    return zlib.crc32(repr(parts).encode())


class LayoutRecorder:
    """APPLY_MODEL wrapper: describe the call, run it, and make sure a DiT call really shared."""

    def __init__(self, settings: ConsistencySettings, host: Backbone, sigma_range: tuple[float, float],
                 patch_size: int = 1, registers: int = 0):
        self.settings = settings
        self.host = host
        self.sigma_start, self.sigma_end = sigma_range
        self.patch_size = patch_size
        self.registers = registers

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None,
                 **kwargs):
        transformer_options = transformer_options or {}
        kinds, images = patching.batch_layout(x.shape[0], transformer_options)
        sigma = float(t.flatten()[0])
        height, width = x.shape[-2:]
        layout = CallLayout(
            images=images,
            latent_size=(height, width),
            step=step_index(sigma, transformer_options.get("sample_sigmas")),
            active=self.sigma_end <= sigma <= self.sigma_start,
            chunk_kinds=kinds,
        )
        dit = self.host.kind == "dit"
        if dit:
            layout.text_tokens = (c_crossattn.shape[1] if c_crossattn is not None else 0) + self.registers
            layout.image_tokens = patch_tokens(x.shape, self.patch_size)
            layout.reference_tokens = sum(patch_tokens(ref.shape, self.patch_size)
                                          for ref in kwargs.get("ref_latents") or ())
        options = {**transformer_options, LAYOUT_KEY: layout}
        out = executor(x, t, c_concat, c_crossattn, control, options, **kwargs)
        if dit and layout.shares(self.settings) and layout.shared_calls == 0:
            raise GenAffectInputError(
                f"consistent attention found no attention call with {layout.text_tokens} text, "
                f"{layout.image_tokens} image and {layout.reference_tokens} reference tokens in this "
                f"{self.host.title} model, so nothing was shared. The model's layout differs from the ones this "
                "pack knows; please report it."
            )
        return out


def _active_layout(options, settings: ConsistencySettings):
    """The call's layout when this call shares tokens, else None."""
    layout = options.get(LAYOUT_KEY) if options else None
    return layout if layout is not None and layout.shares(settings) else None


def _key_mask(mask, batch: int, length: int):
    """A joint attention's mask as (B, L) additive per key, or None. Masks that differ per query (regional
    prompts) are refused: consistent attention gives each image's queries its own keys plus borrowed ones."""
    if mask is None:
        return None
    if mask.ndim == 4 and mask.shape[2] == 1:  # (B, 1, 1, L)
        mask = mask[:, :, 0]
    if mask.ndim == 3 and mask.shape[1] == 1:  # (B, 1, L), as Qwen-Image builds it for a padded prompt
        mask = mask[:, 0]
    if mask.ndim != 2 or mask.shape[-1] != length or mask.shape[0] not in (1, batch):
        raise GenAffectInputError(
            f"this model runs its attention with a mask of shape {list(mask.shape)} that differs per query "
            "(e.g. regional prompts), which consistent attention does not support; turn it off (rate 0) here.")
    if not torch.is_floating_point(mask):  # boolean keep-masks, as PyTorch's SDPA reads them
        mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(~mask.bool(), -torch.inf)
    return mask.expand(batch, length)


class SelfAttentionShare:
    """UNet ``attn1`` replacement: q, k, v are projected, (batch, tokens, heads x dim)."""

    def __init__(self, settings: ConsistencySettings, attention=None):
        self.settings = settings
        self.attention = attention  # None: ComfyUI's optimized_attention, looked up at first use

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        attention = self.attention or patching.optimized_attention()

        def plain(q_, k_, v_, **shape):  # exactly the call ComfyUI's own self-attention makes
            return attention(q_, k_, v_, heads, attn_precision=extra_options.get("attn_precision"),
                             transformer_options=extra_options, **shape)

        layout = _active_layout(extra_options, self.settings)
        if layout is None:
            return plain(q, k, v)
        out = self.settings.share(
            to_heads(q, heads), to_heads(k, heads), to_heads(v, heads),
            images=layout.images, image_tokens=slice(0, q.shape[1]), latent_size=layout.latent_size,
            step=layout.step, salt=salt_of(extra_options.get("block"), extra_options.get("block_index")),
            chunk_kinds=layout.chunk_kinds,
            attention=lambda a, b, c, _mask: plain(a, b, c, skip_reshape=True, skip_output_reshape=True),
        )
        return from_heads(out)


class JointAttentionShare:
    """DiT attention override ``(func, q, k, v, heads, ...)``, chained to ``previous``."""

    def __init__(self, settings: ConsistencySettings, previous=None):
        self.settings = settings
        self.previous = previous.previous if isinstance(previous, JointAttentionShare) else previous

    def _call(self, func, *args, **kwargs):
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def __call__(self, func, *args, **kwargs):
        layout = _active_layout(kwargs.get("transformer_options"), self.settings)
        heads = args[3] if len(args) > 3 else kwargs.get("heads")  # SD3 passes heads by keyword
        if layout is None or heads is None:
            return self._call(func, *args, **kwargs)
        q, k, v = args[:3]
        in_heads = kwargs.get("skip_reshape", False)
        length = q.shape[2] if in_heads else q.shape[1]
        tokens = TokenLayout(layout.text_tokens, layout.image_tokens, layout.reference_tokens)
        if length == tokens.length:  # joint attention: [text ; generated image ; references]
            image_tokens = tokens.generated_slice
        elif length == tokens.generated:  # SD3.5's extra image-only self-attention
            image_tokens = slice(0, tokens.generated)
        else:
            return self._call(func, *args, **kwargs)
        key_mask = _key_mask(kwargs.get("mask", args[4] if len(args) > 4 else None), q.shape[0], length)
        rest = {key: value for key, value in kwargs.items() if key not in ("heads", "mask")}
        rest.update(skip_reshape=True, skip_output_reshape=True)
        if not in_heads:
            q, k, v = to_heads(q, heads), to_heads(k, heads), to_heads(v, heads)
        options = kwargs["transformer_options"]
        out = self.settings.share(
            q, k, v, images=layout.images, image_tokens=image_tokens, latent_size=layout.latent_size,
            step=layout.step, salt=salt_of(options.get("block_type"), options.get("block_index"), length),
            chunk_kinds=layout.chunk_kinds, key_mask=key_mask,
            attention=lambda a, b, c, mask: self._call(func, a, b, c, heads, mask, *args[5:], **rest),
        )
        layout.shared_calls += 1
        return out if kwargs.get("skip_output_reshape", False) else from_heads(out)


def unet_attention_blocks(diffusion_model, which: str) -> list[tuple[str, int]]:
    """The (block name, index) pairs holding transformer blocks, for the UNet part chosen."""
    if which not in UNET_BLOCKS:
        raise GenAffectInputError(f"blocks must be one of {', '.join(UNET_BLOCKS)}; got {which!r}.")

    def has_attention(module) -> bool:
        return any(type(m).__name__ == "BasicTransformerBlock" for m in module.modules())

    parts = {"up": ["output"], "middle and up": ["middle", "output"], "all": ["input", "middle", "output"]}[which]
    found = []
    for name in parts:
        if name == "middle":
            blocks = [diffusion_model.middle_block] if diffusion_model.middle_block is not None else []
        else:
            blocks = getattr(diffusion_model, f"{name}_blocks")
        found += [(name, index) for index, block in enumerate(blocks) if has_attention(block)]
    return found


def install(model, settings: ConsistencySettings, *, start_percent: float = 0.0, end_percent: float = 1.0,
            blocks: str = "up"):
    """A clone of the ComfyUI MODEL ``model`` with consistent attention; ``model`` is left untouched."""
    sigma_range = patching.sigma_range(model, start_percent, end_percent)
    diffusion_model = model.get_model_object("diffusion_model")
    host = patching.backbone_of(model)
    patched = model.clone()
    patched.remove_wrappers_with_key(APPLY_MODEL, WRAPPER_KEY)  # a second node replaces the first
    if host.kind == "unet":
        replace = SelfAttentionShare(settings)
        existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
        for block_name, number in unet_attention_blocks(diffusion_model, blocks):
            # Replacements keyed per transformer (name, number, index) win over ours; look for both.
            others = [patch for key, patch in existing.items() if tuple(key[:2]) == (block_name, number)]
            other = next((patch for patch in others if not isinstance(patch, SelfAttentionShare)), None)
            if other is not None:
                raise GenAffectInputError(
                    f"the {block_name} block {number} already has its self-attention replaced by another node "
                    f"({type(other).__name__}); consistent attention cannot share it. Choose other blocks or "
                    "apply consistent attention before that node."
                )
            patched.set_model_attn1_replace(replace, block_name, number)
        recorder = LayoutRecorder(settings, host, sigma_range)
    else:
        options = patched.model_options.setdefault("transformer_options", {})
        options["optimized_attention_override"] = JointAttentionShare(
            settings, options.get("optimized_attention_override"))
        geometry = patching.dit_geometry(model, host)
        recorder = LayoutRecorder(settings, host, sigma_range, patch_size=geometry.patch_size,
                                  registers=geometry.registers)
    patched.add_wrapper_with_key(APPLY_MODEL, WRAPPER_KEY, recorder)
    return patched
