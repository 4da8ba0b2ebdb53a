"""Arc2Face's Expression Adapter: FLAME-55 -> expression tokens -> decoupled cross-attention.

The published ``exp_adapter.bin`` is a standard IP-Adapter file used without an image encoder (Arc2Face's
code, github.com/foivospar/Arc2Face, read at 8f3acd7): ``image_proj`` turns the 55-d FLAME vector into a
few tokens as wide as the text conditioning, and ``ip_adapter`` holds ``N.to_k_ip`` / ``N.to_v_ip`` for
every cross-attention layer, N = 1, 3, 5, ... counting attention layers in the order diffusers lists them
(down blocks, up blocks, mid block; the even numbers are the self-attention layers, which have no
weights). Each layer adds ``scale * attention(q, K_ip, V_ip)`` to its text cross-attention before the
output projection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import GenAffectInputError, ModelFileError
from ..files.weight_files import check_weights, read_weights, write_safetensors
from .attention import attention_flat
from .batch_rows import condition_rows

FORMAT = "genaffect.expression_adapter"
HINT = ("Download exp_adapter/exp_adapter.bin from https://huggingface.co/FoivosPar/Arc2Face into "
        "ComfyUI/models/arc2face/exp_adapter/.")


class LinearProjection(nn.Module):
    """IP-Adapter's ``ImageProjModel``: one linear layer to ``tokens x width``, then LayerNorm."""

    def __init__(self, in_size: int, width: int, tokens: int):
        super().__init__()
        self.tokens, self.width = tokens, width
        self.proj = nn.Linear(in_size, tokens * width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).reshape(-1, self.tokens, self.width))


class MLPProjection(nn.Module):
    """IP-Adapter FaceID's ``MLPProjModel``: linear, GELU, linear to ``tokens x width``, then LayerNorm."""

    def __init__(self, in_size: int, hidden: int, width: int, tokens: int):
        super().__init__()
        self.tokens, self.width = tokens, width
        self.proj = nn.Sequential(nn.Linear(in_size, hidden), nn.GELU(), nn.Linear(hidden, tokens * width))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).reshape(-1, self.tokens, self.width))


class FullProjection(nn.Module):
    """IP-Adapter Full's ``MLPProjModel``: linear, GELU, linear, LayerNorm, one token."""

    def __init__(self, in_size: int, hidden: int, width: int):
        super().__init__()
        self.tokens, self.width = 1, width
        self.proj = nn.Sequential(nn.Linear(in_size, hidden), nn.GELU(), nn.Linear(hidden, width), nn.LayerNorm(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).reshape(-1, 1, self.width)


def build_projection(state: dict[str, torch.Tensor], path: str) -> nn.Module:
    """The projection the ``image_proj`` keys describe, sizes read from the weights."""
    keys = set(state)
    if "proj.weight" in keys and "norm.weight" in keys:
        width = state["norm.weight"].shape[0]
        out, in_size = state["proj.weight"].shape
        return LinearProjection(in_size, width, out // width)
    if {"proj.0.weight", "proj.2.weight", "proj.3.weight"} <= keys:
        hidden, in_size = state["proj.0.weight"].shape
        return FullProjection(in_size, hidden, state["proj.3.weight"].shape[0])
    if {"proj.0.weight", "proj.2.weight", "norm.weight"} <= keys:
        hidden, in_size = state["proj.0.weight"].shape
        width = state["norm.weight"].shape[0]
        return MLPProjection(in_size, hidden, width, state["proj.2.weight"].shape[0] // width)
    kind = "a Perceiver resampler (IP-Adapter Plus)" if any("latents" in k or "perceiver" in k for k in keys) else \
        "an unknown projection"
    raise ModelFileError(
        f"{path}: its image_proj is {kind} ({', '.join(sorted(keys)[:4])}, ...); the Expression Adapter takes "
        f"the FLAME vector through a linear or MLP projection. Is this an image IP-Adapter? {HINT}"
    )


@dataclass(frozen=True)
class AdapterLayer:
    number: int  # the published key's number (1, 3, 5, ...)
    width: int  # the attention layer's inner width (to_k_ip output)


class ExpressionAdapter(nn.Module):
    """The projection plus ``to_k_ip`` / ``to_v_ip`` of every cross-attention layer, in diffusers' order."""

    def __init__(self, projection: nn.Module, layers: list[AdapterLayer], context_width: int, source: str = ""):
        super().__init__()
        self.projection = projection
        self.layers = layers
        self.context_width = context_width
        self.source = source
        self.to_k_ip = nn.ModuleList(nn.Linear(context_width, layer.width, bias=False) for layer in layers)
        self.to_v_ip = nn.ModuleList(nn.Linear(context_width, layer.width, bias=False) for layer in layers)

    @property
    def expression_size(self) -> int:
        return self.projection.proj.in_features if isinstance(self.projection, LinearProjection) else \
            self.projection.proj[0].in_features

    @property
    def token_count(self) -> int:
        return self.projection.tokens

    def tokens(self, expressions: torch.Tensor) -> torch.Tensor:
        """(B, 55) FLAME vectors -> (B, tokens, context width); a zero vector is the "no expression" of CFG."""
        if expressions.ndim != 2 or expressions.shape[1] != self.expression_size:
            raise GenAffectInputError(
                f"the Expression Adapter takes vectors of {self.expression_size} values (FLAME-55); got "
                f"shape {tuple(expressions.shape)}."
            )
        weight = self.to_k_ip[0].weight
        return self.projection(expressions.to(device=weight.device, dtype=weight.dtype))

    def keys_values(self, layer: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_k_ip[layer](tokens), self.to_v_ip[layer](tokens)

    def state_dict_published(self) -> dict[str, torch.Tensor]:
        """Weights under the published names (``image_proj.*``, ``ip_adapter.N.to_k_ip.weight``)."""
        state = {f"image_proj.{k}": v.detach() for k, v in self.projection.state_dict().items()}
        for i, layer in enumerate(self.layers):
            state[f"ip_adapter.{layer.number}.to_k_ip.weight"] = self.to_k_ip[i].weight.detach()
            state[f"ip_adapter.{layer.number}.to_v_ip.weight"] = self.to_v_ip[i].weight.detach()
        return state


def split_published(state: dict[str, torch.Tensor], path: str) -> tuple[dict, dict]:
    """(image_proj entries, ip_adapter entries) of a flat published state dict."""
    image_proj = {k[len("image_proj."):]: v for k, v in state.items() if k.startswith("image_proj.")}
    ip_adapter = {k[len("ip_adapter."):]: v for k, v in state.items() if k.startswith("ip_adapter.")}
    if not image_proj or not ip_adapter:
        found = ", ".join(sorted({k.split(".", 1)[0] for k in state})[:6]) or "nothing"
        raise ModelFileError(
            f"{path} is not an IP-Adapter-style file: it needs image_proj and ip_adapter entries and holds {found}. "
            f"{HINT}"
        )
    return image_proj, ip_adapter


def adapter_from_state(state: dict[str, torch.Tensor], path: str) -> ExpressionAdapter:
    image_proj, ip_adapter = split_published(state, path)
    check_weights(state, path, HINT)
    projection = build_projection(image_proj, path)
    numbers = sorted({int(k.split(".", 1)[0]) for k in ip_adapter if k.split(".", 1)[0].isdigit()})
    layers, context_width = [], None
    for number in numbers:
        k, v = ip_adapter.get(f"{number}.to_k_ip.weight"), ip_adapter.get(f"{number}.to_v_ip.weight")
        if k is None or v is None or k.shape != v.shape:
            raise ModelFileError(f"{path}: layer {number} lacks a matching to_k_ip / to_v_ip pair. {HINT}")
        context_width = context_width or k.shape[1]
        layers.append(AdapterLayer(number, k.shape[0]))
    if not layers or context_width != projection.width:
        raise ModelFileError(
            f"{path}: the projection makes {projection.width}-wide tokens but the attention layers read "
            f"{context_width}-wide ones. {HINT}"
        )
    adapter = ExpressionAdapter(projection, layers, context_width, source=os.path.basename(path))
    expected = adapter.state_dict_published()
    given = {f"image_proj.{k}": v for k, v in image_proj.items()}
    given.update({f"ip_adapter.{k}": v for k, v in ip_adapter.items()})
    wrong = [f"{k} {tuple(given[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in given and given[k].shape != v.shape]
    for what, keys in (("missing", sorted(set(expected) - set(given))), ("unexpected", sorted(set(given) - set(expected))),
                       ("wrong shape", wrong)):
        if keys:
            raise ModelFileError(f"{path}: {len(keys)} {what} entries ({', '.join(keys[:4])}). {HINT}")
    projection.load_state_dict(image_proj, strict=True)
    for i, layer in enumerate(layers):
        adapter.to_k_ip[i].weight.data.copy_(ip_adapter[f"{layer.number}.to_k_ip.weight"])
        adapter.to_v_ip[i].weight.data.copy_(ip_adapter[f"{layer.number}.to_v_ip.weight"])
    return adapter.eval().requires_grad_(False)


def load_expression_adapter(path: str) -> ExpressionAdapter:
    """The adapter from the published ``.bin`` (read with weights_only=True) or its safetensors conversion."""
    return adapter_from_state(read_weights(path, HINT), path)


def convert_to_safetensors(path: str, output_path: str) -> str:
    """Write a published ``.bin`` as safetensors with the same names (the file loads without pickle after)."""
    adapter = load_expression_adapter(path)
    return write_safetensors(adapter.state_dict_published(), output_path,
                             metadata={"format": FORMAT, "source": os.path.basename(path)})


# --- the attention -----------------------------------------------------------------------------------

def decoupled_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_ip: torch.Tensor,
                              v_ip: torch.Tensor, heads: int, scale: float,
                              attention: Callable = attention_flat) -> torch.Tensor:
    """Text cross-attention plus ``scale`` x attention on the expression tokens (before ``to_out``).

    q (B, L, W); k, v (B, text tokens, W); k_ip, v_ip (B, expression tokens, W), all projected.
    """
    out = attention(q, k, v, heads)
    if scale == 0:
        return out
    return out + scale * attention(q, k_ip.to(q.dtype), v_ip.to(q.dtype), heads)


def expression_rows(expressions: torch.Tensor, chunk_kinds, images: int) -> torch.Tensor:
    """The FLAME vector for every row of a model batch (``batch_rows``): positive rows get their image's
    expression, the others zeros (the published neutral)."""
    rows = condition_rows(chunk_kinds, images, expressions.shape[0], "expressions")
    zeros = torch.zeros_like(expressions[0])
    return torch.stack([zeros if row is None else expressions[row] for row in rows])
