"""The Expression Adapter installed on a ComfyUI MODEL clone as ``attn2`` (cross-attention) replacements.

ComfyUI hands an attn2 replacement the projected q, k, v and applies the layer's ``to_out`` to what it
returns, as diffusers' IP-Adapter processors do around their sum. The adapter's layers follow
diffusers' order (down blocks, up blocks, mid block), which in ComfyUI's names is input blocks,
output blocks, middle block, each block's transformers in order.
"""

from __future__ import annotations

import torch

from ...models.errors import GenAffectInputError
from ...models.generation.expression_adapter import ExpressionAdapter, decoupled_cross_attention, expression_rows
from . import patching


def cross_attention_layers(diffusion_model) -> list[tuple[tuple[str, int, int], torch.nn.Module]]:
    """((block name, block number, transformer index), attn2 module) of a ComfyUI UNet, in diffusers' order."""
    layers = []
    for name, blocks in (("input", diffusion_model.input_blocks), ("output", diffusion_model.output_blocks),
                         ("middle", [diffusion_model.middle_block])):
        for number, block in enumerate(blocks):
            transformers = [m for m in block.modules() if type(m).__name__ == "BasicTransformerBlock"]
            layers += [((name, number, index), t.attn2) for index, t in enumerate(transformers)
                       if t.attn2 is not None]
    return layers


def check_host(model, adapter: ExpressionAdapter) -> list[tuple[str, int, int]]:
    """The attn2 blocks the adapter's layers patch; refuses a model they were not trained for."""
    patching.require(patching.backbone_of(model), "unet", "the Expression Adapter patches an SD1.5 UNet (Arc2Face)",
                     "Load Arc2Face with GenAffect Arc2Face Loader; for diffusion transformers use the expression "
                     "prompts or a Gen-AFFECT DiT adapter.")
    layers = cross_attention_layers(model.get_model_object("diffusion_model"))
    shapes = [tuple(module.to_k.weight.shape) for _, module in layers]
    wanted = [(layer.width, adapter.context_width) for layer in adapter.layers]
    if shapes != wanted:
        raise GenAffectInputError(
            f"this UNet has {len(shapes)} cross-attention layers reading {shapes[0][1] if shapes else '?'}-wide "
            f"text; the Expression Adapter ({adapter.source}) was trained for {len(wanted)} layers reading "
            f"{adapter.context_width}-wide text (SD1.5). An SDXL or other UNet cannot take it; use Arc2Face's UNet."
        )
    return [block for block, _ in layers]


class ExpressionTokens:
    """The adapter's keys/values for every model call's rows: the tokens once per batch layout, each
    layer's keys/values once per layout, device and dtype (they do not change between steps)."""

    def __init__(self, adapter: ExpressionAdapter, expressions: torch.Tensor):
        self.adapter = adapter
        self.expressions = expressions  # (N, 55) float32
        self._tokens: dict = {}
        self._keys_values: dict = {}

    def keys_values(self, layer: int, chunk_kinds: tuple, images: int, device, dtype):
        key = (layer, chunk_kinds, images, device, dtype)
        if key not in self._keys_values:
            with torch.no_grad():
                if (chunk_kinds, images) not in self._tokens:
                    rows = expression_rows(self.expressions, chunk_kinds, images)
                    self._tokens[chunk_kinds, images] = self.adapter.tokens(rows)
                k, v = self.adapter.keys_values(layer, self._tokens[chunk_kinds, images])
            self._keys_values[key] = (k.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype))
        return self._keys_values[key]


class ExpressionCrossAttention:
    """The attn2 replacement of one layer: text cross-attention + strength x expression attention."""

    def __init__(self, tokens: ExpressionTokens, layer: int, strength: float, sigma_range: tuple[float, float]):
        self.tokens = tokens
        self.layer = layer
        self.strength = strength
        self.sigma_range = sigma_range

    def __call__(self, q, k, v, extra_options):
        attention = patching.layer_attention(extra_options)
        heads = extra_options["n_heads"]
        if not patching.in_sigma_range(extra_options, self.sigma_range):
            return attention(q, k, v, heads)
        kinds, images = patching.batch_layout(q.shape[0], extra_options)
        k_ip, v_ip = self.tokens.keys_values(self.layer, kinds, images, q.device, q.dtype)
        return decoupled_cross_attention(q, k, v, k_ip, v_ip, heads, self.strength, attention=attention)


ADDITIONAL_MODELS_KEY = "genaffect_expression_adapter"


def install(model, adapter: ExpressionAdapter, expressions: torch.Tensor, strength: float,
            start_percent: float = 0.0, end_percent: float = 1.0):
    """A clone of ComfyUI MODEL ``model`` whose cross-attention layers also attend to the expressions."""
    sigma_range = patching.sigma_range(model, start_percent, end_percent)
    blocks = check_host(model, adapter)
    tokens = ExpressionTokens(adapter, expressions)
    patched = model.clone()
    for layer, (name, number, index) in enumerate(blocks):
        patched.set_model_attn2_replace(ExpressionCrossAttention(tokens, layer, strength, sigma_range),
                                        name, number, index)
    patched.set_additional_models(ADDITIONAL_MODELS_KEY, [patching.companion_patcher(adapter, model)])
    return patched
