"""The Gen-AFFECT DiT adapter installed on a ComfyUI diffusion-transformer MODEL clone as block replacements.

ComfyUI's DiTs run ``patches_replace["dit"][("double_block", i)]`` / ``("single_block", i)`` in place of
their blocks (FLUX.1, FLUX.2, Chroma: both kinds; Qwen-Image, SD3: double only; ``models/generation/backbones.py``).
Each replacement runs the original block, then adds the adapter's residual to the positive rows'
*generated* image tokens: not to text, and not to the reference images an instruction editor appends
after them. This is the same post-block residual the trainer hosts on diffusers models with forward
hooks (training/diffusers_host.py). Negative rows (classifier-free guidance) get none, so the
adapter's effect is what guidance amplifies.
"""

from __future__ import annotations

import torch

from ...models.generation.batch_rows import condition_rows
from ...models.generation.dit_adapter import DiTAdapter, ResidualCrossAttention, check_backbone
from . import patching

ADDITIONAL_MODELS_KEY = "genaffect_dit_adapter"


def backbone_sizes(model) -> dict:
    """family, hidden size and block counts of a ComfyUI MODEL, refused unless the adapter can patch it."""
    backbone = patching.backbone_of(model)
    patching.require(backbone, "dit", "the Gen-AFFECT DiT adapter patches diffusion transformers",
                     "For Arc2Face (SD1.5) use GenAffect Apply Expression Adapter.")
    return patching.dit_geometry(model, backbone).sizes()


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
            rows = condition_rows(kinds, images, self.expression.shape[0], "expressions")
            positive = [row for row, expression in enumerate(rows) if expression is not None]
            weights = next(self.adapter.parameters())
            with torch.no_grad():
                identity_tokens, expression_tokens = self.adapter.encoder(
                    self.identity.to(weights.device), self.expression.to(weights.device))
            self._cache[key] = (
                torch.tensor(positive, dtype=torch.long, device=device),
                identity_tokens.expand(len(positive), -1, -1).to(device, dtype),
                expression_tokens[[e for e in rows if e is not None]].to(device, dtype),
            )
        return self._cache[key]


class AdapterBlock:
    """The replacement of one DiT block: the block, then the adapter's residual on its generated image tokens."""

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
        if not patching.in_sigma_range(options, self.sigma_range):
            return out
        hidden = out["img"]
        # single blocks carry [text ; image (; references)] tokens, double blocks [image (; references)]
        text = options["img_slice"][0] if self.single else 0
        generated = patching.image_stream_layout(hidden.shape[1], options, text).generated_slice
        kinds, images = patching.batch_layout(hidden.shape[0], options)
        rows, identity_tokens, expression_tokens = self.tokens.for_rows(kinds, images, hidden.device, hidden.dtype)
        if rows.numel() == 0:
            return out
        image = hidden[rows, generated]
        delta = self.module.delta(image, identity_tokens, expression_tokens, *self.strengths)
        if rows.numel() == hidden.shape[0] and generated == slice(0, hidden.shape[1]):
            hidden = hidden + delta
        else:
            hidden = hidden.clone()
            hidden[rows, generated] = image + delta
        return {**out, "img": hidden}


def _for_dtype(adapter: DiTAdapter, dtype) -> DiTAdapter:
    """The adapter in the model's compute dtype: a copy made once and kept with the loaded adapter (which stays
    as loaded); fp8 or other storage-only weights leave it as it is."""
    if dtype not in (torch.float16, torch.bfloat16, torch.float32) or next(adapter.parameters()).dtype == dtype:
        return adapter
    copies = adapter.__dict__.setdefault("_genaffect_by_dtype", {})
    if dtype not in copies:
        with torch.device("meta"):  # built empty, filled from the loaded weights (no patcher or cache copied)
            converted = DiTAdapter(adapter.config)
        converted = converted.to(dtype).to_empty(device=next(adapter.parameters()).device)
        converted.load_state_dict(adapter.state_dict())
        converted.source = adapter.source
        copies[dtype] = converted.eval()
    return copies[dtype]


def install(model, adapter: DiTAdapter, identity: torch.Tensor, expression: torch.Tensor,
            identity_strength: float, expression_strength: float, start_percent: float = 0.0,
            end_percent: float = 1.0):
    """A clone of ComfyUI MODEL ``model`` with the adapter after the double/single blocks it was trained for.

    ``identity`` (1, 512); ``expression`` (N, encoder input): image i of the batch takes row i.
    """
    sigma_range = patching.sigma_range(model, start_percent, end_percent)
    check_backbone(adapter.config, source=f"the DiT adapter {adapter.source}", **backbone_sizes(model))
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
    patched.set_additional_models(ADDITIONAL_MODELS_KEY, [patching.companion_patcher(adapter, model)])
    return patched
