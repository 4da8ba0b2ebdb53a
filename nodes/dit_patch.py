"""The Gen-AFFECT DiT adapter installed on a ComfyUI FLUX or SD3 MODEL clone as block replacements.

ComfyUI's FLUX runs ``patches_replace["dit"][("double_block", i)]`` / ``("single_block", i)`` in place
of its blocks and SD3's MMDiT the double ones (DESIGN.md §4). Each replacement runs the original block,
then adds the adapter's residual to the positive rows' image tokens: the same post-block residual the
trainer hosts on diffusers models with forward hooks (training/diffusers_host.py). Negative rows
(classifier-free guidance) get none, so the adapter's effect is what guidance amplifies.
"""

from __future__ import annotations

import copy

import torch

from ..models.dit_adapter import DiTAdapter, ResidualCrossAttention, check_backbone
from ..models.errors import GenAffectInputError
from . import comfy_host

ADDITIONAL_MODELS_KEY = "genaffect_dit_adapter"


def backbone_of(diffusion_model) -> dict:
    """family, hidden size and block counts of a ComfyUI diffusion model the adapter can patch."""
    family = comfy_host.architecture_of(diffusion_model)
    if family == "flux":
        return dict(family="flux", hidden_size=diffusion_model.hidden_size,
                    double_blocks=len(diffusion_model.double_blocks), single_blocks=len(diffusion_model.single_blocks))
    if family == "sd3":
        return dict(family="sd3", hidden_size=diffusion_model.hidden_size,
                    double_blocks=len(diffusion_model.joint_blocks), single_blocks=0)
    raise GenAffectInputError(
        f"the Gen-AFFECT DiT adapter patches FLUX or SD3 diffusion transformers; this MODEL is a "
        f"{type(diffusion_model).__name__}. For Arc2Face (SD1.5) use GenAffect Apply Expression Adapter."
    )


class AdapterTokens:
    """Identity and expression tokens for every model call's rows, made once per batch layout and device."""

    def __init__(self, adapter: DiTAdapter, identity: torch.Tensor, expression: torch.Tensor):
        self.adapter = adapter
        self.identity = identity  # (1, 512)
        self.expression = expression  # (N, encoder input)
        self._cache: dict = {}

    def for_rows(self, kinds: tuple, images: int, device, dtype):
        """(positive row indices, identity tokens, expression tokens) for a batch of ``kinds`` x ``images``."""
        key = (kinds, images, device, dtype)
        if key not in self._cache:
            count = self.expression.shape[0]
            if count not in (1, images):
                raise GenAffectInputError(
                    f"{count} expressions for a latent batch of {images} images: image i takes expression i. Set "
                    f"the latent batch size to {count}, or give one expression for all images.")
            positive = [chunk * images + i for chunk, kind in enumerate(kinds) if kind == 0 for i in range(images)]
            weights = next(self.adapter.parameters())
            with torch.no_grad():
                identity_tokens, expression_tokens = self.adapter.encoder(
                    self.identity.to(weights.device), self.expression.to(weights.device))
            per_image = torch.arange(images) % count
            repeat = len(positive) // images
            self._cache[key] = (
                torch.tensor(positive, dtype=torch.long, device=device),
                identity_tokens.expand(images, -1, -1).repeat(repeat, 1, 1).to(device, dtype),
                expression_tokens[per_image].repeat(repeat, 1, 1).to(device, dtype),
            )
        return self._cache[key]


class AdapterBlock:
    """The replacement of one FLUX/SD3 block: the block, then the adapter's residual on its image tokens."""

    def __init__(self, module: ResidualCrossAttention, tokens: AdapterTokens, strengths: tuple[float, float],
                 sigma_range: tuple[float, float], single: bool, inner=None):
        self.module = module
        self.inner = inner  # a replacement another node installed on this block first: it runs inside ours
        self.tokens = tokens
        self.strengths = strengths
        self.sigma_range = sigma_range
        self.single = single

    def __call__(self, args: dict, extra: dict) -> dict:
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        options = args.get("transformer_options") or {}
        if not comfy_host.in_sigma_range(options, self.sigma_range):
            return out
        hidden = out["img"]
        # single blocks carry [text ; image] tokens; the residual is for the image tokens only
        start = options["img_slice"][0] if self.single else 0
        kinds, images = comfy_host.batch_layout(hidden.shape[0], options)
        rows, identity_tokens, expression_tokens = self.tokens.for_rows(kinds, images, hidden.device, hidden.dtype)
        if rows.numel() == 0:
            return out
        image = hidden[rows, start:]
        delta = self.module.delta(image, identity_tokens, expression_tokens, *self.strengths)
        if rows.numel() == hidden.shape[0] and start == 0:
            hidden = hidden + delta
        else:
            hidden = hidden.clone()
            hidden[rows, start:] = image + delta
        return {**out, "img": hidden}


def _for_dtype(adapter: DiTAdapter, dtype) -> DiTAdapter:
    """The adapter in the model's compute dtype (a copy, so the loaded one stays as loaded); fp8 or other
    storage-only weights leave it as it is."""
    if dtype not in (torch.float16, torch.bfloat16, torch.float32) or next(adapter.parameters()).dtype == dtype:
        return adapter
    return copy.deepcopy(adapter).to(dtype)


def install(model, adapter: DiTAdapter, identity: torch.Tensor, expression: torch.Tensor,
            identity_strength: float, expression_strength: float, start_percent: float = 0.0,
            end_percent: float = 1.0):
    """A clone of ComfyUI MODEL ``model`` with the adapter after its FLUX double/single or SD3 blocks.

    ``identity`` (1, 512); ``expression`` (N, encoder input): image i of the batch takes row i.
    """
    sigma_range = comfy_host.sigma_range(model, start_percent, end_percent)
    check_backbone(adapter.config, source=f"the DiT adapter {adapter.source}",
                   **backbone_of(model.get_model_object("diffusion_model")))
    base = model.model
    adapter = _for_dtype(adapter, getattr(base, "get_dtype_inference", base.get_dtype)())
    tokens = AdapterTokens(adapter, identity, expression)
    strengths = (identity_strength, expression_strength)
    patched = model.clone()
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for kind, modules in (("double", adapter.after_double), ("single", adapter.after_single)):
        for index, module in modules.items():
            key = (f"{kind}_block", int(index))
            block = AdapterBlock(module, tokens, strengths, sigma_range, single=kind == "single",
                                 inner=existing.get(key))
            patched.set_model_patch_replace(block, "dit", *key)
    import comfy.model_patcher

    # ComfyUI moves the adapter to the GPU with the transformer and offloads it with it.
    patched.set_additional_models(ADDITIONAL_MODELS_KEY, [
        comfy.model_patcher.ModelPatcher(adapter, load_device=model.load_device, offload_device=model.offload_device)
    ])
    return patched
