"""The Gen-AFFECT identity-expression adapter for diffusion transformers (the families of ``backbones.py``).

An encoder turns an ArcFace identity (512, L2-normalised) and an expression (52 blendshapes and/or
FLAME-55, with flags saying which are present) into identity tokens and expression tokens, each
through a small Perceiver resampler. After every ``double_every``-th double block and every
``single_every``-th single block (PuLID-FLUX's placement; js/docs/GenAffectApplyDiTAdapter.md) the
image tokens take a residual cross-attention on those tokens:

    image += to_out(identity_strength * attn(q, K_id, V_id) + expression_strength * attn(q, K_ex, V_ex))

``to_out`` starts at zero, so an untrained adapter, or both strengths at 0, changes nothing. The
file is safetensors with metadata describing the backbone it was trained for (:class:`DiTAdapterConfig`).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GenAffectInputError, ModelFileError
from ..expression.batch import ExpressionBatch
from ..files.weight_files import check_layout, load_checked, safetensors_layout, write_safetensors
from . import backbones
from .attention import attention_flat

FORMAT = "genaffect.dit_adapter"
FORMAT_VERSION = 1
IDENTITY_SIZE, BLENDSHAPE_SIZE, FLAME_SIZE = 512, 52, 55
EXPRESSION_INPUT = BLENDSHAPE_SIZE + FLAME_SIZE + 2  # both vectors (zeros when absent) + their presence flags
REPRESENTATIONS = ("blendshapes", "flame", "both")  # what the expression encoder was trained to read


@dataclass(frozen=True)
class DiTAdapterConfig:
    """What an adapter file was built for; stored in its metadata and checked against the MODEL."""

    family: str  # a backbones.py family that hosts the adapter ("flux", "flux2", "qwen_image", ...)
    hidden_size: int  # the backbone's image-token width (FLUX.1: 3072)
    double_blocks: int  # FLUX.1: 19; SD3: its joint blocks; Qwen-Image: its 60 blocks
    single_blocks: int = 0  # FLUX.1: 38; SD3, Qwen-Image: none
    double_every: int = 2
    single_every: int = 4
    token_width: int = 2048
    identity_tokens: int = 16
    expression_tokens: int = 8
    heads: int = 16
    head_dim: int = 64
    resampler_depth: int = 2
    expression: str = "both"  # "both": trained with either or both, as the presence flags say

    def __post_init__(self):
        backbone = backbones.family(self.family)
        if not backbone.hosts_adapter:
            raise GenAffectInputError(f"the DiT adapter is made for diffusion transformers "
                                      f"({', '.join(backbones.ADAPTER_FAMILIES)}), not {backbone.title}.")
        if self.expression not in REPRESENTATIONS:
            raise GenAffectInputError(f"adapter expression must be one of {REPRESENTATIONS}, got {self.expression!r}.")
        if backbone.single_blocks is None and self.single_blocks:
            raise GenAffectInputError(f"{backbone.title} has no single blocks; single_blocks must be 0.")
        if min(self.double_every, self.single_every, self.heads, self.head_dim) < 1:
            raise GenAffectInputError("block intervals, heads and head size must be at least 1.")

    @property
    def double_positions(self) -> list[int]:
        return list(range(0, self.double_blocks, self.double_every))

    @property
    def single_positions(self) -> list[int]:
        return list(range(0, self.single_blocks, self.single_every))

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": json.dumps(asdict(self))}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, source: str) -> "DiTAdapterConfig":
        """The configuration a file's metadata describes, every field checked before anything is built."""
        metadata = metadata or {}
        if metadata.get("format") != FORMAT:
            raise ModelFileError(f"{source} is not a Gen-AFFECT DiT adapter (its metadata has no format "
                                 f"{FORMAT!r}); train one with training/ or export a checkpoint with it.")
        version = metadata.get("format_version", "0")
        if not version.isdigit():
            raise ModelFileError(f"{source}: metadata field format_version is {version!r}, not a whole number; "
                                 "the file is damaged. Export the adapter again.")
        if int(version) > FORMAT_VERSION:
            raise ModelFileError(f"{source} is adapter format {version}; this GenAffect reads up to "
                                 f"{FORMAT_VERSION}. Update GenAffect.")
        try:
            values = json.loads(metadata.get("config", ""))
        except json.JSONDecodeError as error:
            raise ModelFileError(f"{source}: metadata field config is not valid JSON ({error}); the file is damaged. "
                                 "Export the adapter again.") from error
        if not isinstance(values, dict):
            raise ModelFileError(f"{source}: metadata field config is a {type(values).__name__}, not an object; the "
                                 "file is damaged. Export the adapter again.")
        chosen = {}
        for field in fields(cls):
            if field.name not in values:
                if field.default is MISSING:
                    raise ModelFileError(f"{source}: metadata field config.{field.name} is missing; the file is "
                                         "damaged. Export the adapter again.")
                continue
            value, kind = values[field.name], type(field.default) if field.default is not MISSING else (
                str if field.name == "family" else int)
            if type(value) is not kind or (kind is int and value < (0 if field.name.endswith("blocks") else 1)):
                raise ModelFileError(f"{source}: metadata field config.{field.name} is {value!r}; expected "
                                     f"{'a text' if kind is str else 'a positive whole number'}. The file is damaged; "
                                     "export the adapter again.")
            chosen[field.name] = value
        try:
            return cls(**chosen)
        except GenAffectInputError as error:
            raise ModelFileError(f"{source}: {error}") from error


class PerceiverLayer(nn.Module):
    """Learned queries attend to [inputs ; queries], then a feed-forward (IP-Adapter Plus's resampler layer)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_inputs, self.norm_queries = nn.LayerNorm(width), nn.LayerNorm(width)
        self.to_q, self.to_kv = nn.Linear(width, width, bias=False), nn.Linear(width, 2 * width, bias=False)
        self.to_out = nn.Linear(width, width, bias=False)
        self.ff = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, inputs: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        x, latents = self.norm_inputs(inputs), self.norm_queries(queries)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        queries = queries + self.to_out(attention_flat(self.to_q(latents), k, v, self.heads))
        return queries + self.ff(queries)


class TokenResampler(nn.Module):
    """A vector -> ``tokens`` tokens of ``width``: a linear lift to a few input tokens, then learned
    queries refined by Perceiver layers."""

    def __init__(self, in_size: int, width: int, tokens: int, depth: int, heads: int):
        super().__init__()
        self.inputs = 4
        self.lift = nn.Sequential(nn.Linear(in_size, width), nn.GELU(), nn.Linear(width, self.inputs * width))
        self.queries = nn.Parameter(torch.randn(1, tokens, width) * width ** -0.5)
        self.layers = nn.ModuleList(PerceiverLayer(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = self.lift(x).view(x.shape[0], self.inputs, -1)
        queries = self.queries.expand(x.shape[0], -1, -1)
        for layer in self.layers:
            queries = layer(inputs, queries)
        return self.norm(queries)


def expression_input(blendshapes: torch.Tensor | None, flame: torch.Tensor | None, batch: int) -> torch.Tensor:
    """The expression encoder's input: both vectors (zeros where absent) and two presence flags."""
    if blendshapes is None and flame is None:
        raise GenAffectInputError("the expression has neither blendshapes nor FLAME-55 values.")
    parts = []
    for vector, size in ((blendshapes, BLENDSHAPE_SIZE), (flame, FLAME_SIZE)):
        if vector is not None and tuple(vector.shape) != (batch, size):
            raise GenAffectInputError(f"expected {batch} expression vectors of {size}; got {tuple(vector.shape)}.")
        parts.append(torch.zeros(batch, size) if vector is None else vector.float())
    flags = torch.tensor([[blendshapes is not None, flame is not None]], dtype=torch.float32).expand(batch, 2)
    return torch.cat(parts + [flags], dim=1)


def adapter_expression_input(config: DiTAdapterConfig, blendshapes, flame, batch: int,
                             source: str = "this adapter") -> torch.Tensor:
    """The encoder input for an adapter: only the representations it was trained on, refused when missing."""
    wanted = {"blendshapes": ("blendshapes",), "flame": ("flame",), "both": ("blendshapes", "flame")}[config.expression]
    blendshapes = blendshapes if "blendshapes" in wanted else None
    flame = flame if "flame" in wanted else None
    if blendshapes is None and flame is None:
        how = {"blendshapes": "52 blendshapes (Expression Preset, Editor, or Estimate Expression)",
               "flame": "FLAME-55 (Estimate Expression with SMIRK, or Apply Expression Mapping)",
               "both": "blendshapes or FLAME-55"}[config.expression]
        raise GenAffectInputError(f"{source} reads expressions as {how}; these expressions have none of that.")
    return expression_input(blendshapes, flame, batch)


class IdentityExpressionEncoder(nn.Module):
    """Identity (B, 512) + expression input (B, 109) -> identity tokens, expression tokens."""

    def __init__(self, config: DiTAdapterConfig):
        super().__init__()
        width, heads = config.token_width, max(1, config.token_width // 64)
        self.identity = TokenResampler(IDENTITY_SIZE, width, config.identity_tokens, config.resampler_depth, heads)
        self.expression = TokenResampler(EXPRESSION_INPUT, width, config.expression_tokens, config.resampler_depth,
                                         heads)

    def forward(self, identity: torch.Tensor, expression: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.identity.queries.dtype  # bf16/fp16 on GPUs: the inputs arrive in fp32
        identity = F.normalize(identity.float(), dim=-1).to(dtype)
        return self.identity(identity), self.expression(expression.to(dtype))


class ResidualCrossAttention(nn.Module):
    """Image tokens attend to identity and expression tokens; the result is added to them (zero at start)."""

    def __init__(self, config: DiTAdapterConfig):
        super().__init__()
        inner = config.heads * config.head_dim
        self.heads = config.heads
        self.norm_image, self.norm_tokens = nn.LayerNorm(config.hidden_size), nn.LayerNorm(config.token_width)
        self.to_q = nn.Linear(config.hidden_size, inner, bias=False)
        self.to_kv = nn.Linear(config.token_width, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, config.hidden_size, bias=False)
        nn.init.zeros_(self.to_out.weight)

    def delta(self, image: torch.Tensor, identity_tokens: torch.Tensor, expression_tokens: torch.Tensor,
              identity_strength: float, expression_strength: float) -> torch.Tensor:
        """What the block adds to ``image`` (B, L, hidden); tokens (B, T, token width)."""
        dtype, weights = image.dtype, self.to_q.weight.dtype
        q = self.to_q(self.norm_image(image.to(weights)))
        mixed = 0
        for tokens, strength in ((identity_tokens, identity_strength), (expression_tokens, expression_strength)):
            if strength:
                k, v = self.to_kv(self.norm_tokens(tokens.to(q.dtype))).chunk(2, dim=-1)
                mixed = mixed + strength * attention_flat(q, k, v, self.heads)
        if not torch.is_tensor(mixed):  # both strengths 0
            return torch.zeros_like(image)
        return self.to_out(mixed).to(dtype)


class DiTAdapter(nn.Module):
    """The encoder and one residual cross-attention per patched block."""

    def __init__(self, config: DiTAdapterConfig):
        super().__init__()
        self.config = config
        self.source = "an adapter not loaded from a file"  # its path once loaded, for messages
        self.encoder = IdentityExpressionEncoder(config)
        # not "double": nn.Module has a method of that name
        self.after_double = nn.ModuleDict({str(i): ResidualCrossAttention(config) for i in config.double_positions})
        self.after_single = nn.ModuleDict({str(i): ResidualCrossAttention(config) for i in config.single_positions})

    def block(self, kind: str, index: int) -> ResidualCrossAttention | None:
        """The module after double or single block ``index``, or None where the adapter adds nothing."""
        blocks = self.after_double if kind == "double" else self.after_single
        return blocks[str(index)] if str(index) in blocks else None

    def save(self, path: str) -> str:
        return write_safetensors(self.state_dict(), path, self.config.metadata())

    def conditions(self, identity_embedding: np.ndarray, expression: ExpressionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The identity (1, 512) and the expressions as the encoder reads them (N, input). The adapter learnt from
        blendshapes MediaPipe estimated on its photos, so it gets expressions in that space: a preset's
        estimator-space target, an estimated expression's own blendshapes (ExpressionBatch.estimator_space)."""
        estimated = expression.estimator_or_blendshapes()
        blendshapes = None if estimated is None else torch.from_numpy(estimated).float()
        flame = None if expression.flame is None else torch.from_numpy(expression.flame).float()
        identity = torch.from_numpy(np.asarray(identity_embedding, np.float32))[None]
        return identity, adapter_expression_input(self.config, blendshapes, flame, len(expression),
                                                  source=f"the adapter {self.source}")

    def describe(self) -> str:
        """What the file holds, for the loader's info output."""
        config = self.config
        blocks = f"{config.double_blocks} double" + (f" / {config.single_blocks} single" if config.single_blocks else "")
        patched = len(self.after_double) + len(self.after_single)
        parameters = sum(p.numel() for p in self.parameters())
        return "\n".join([
            f"file: {self.source}",
            f"backbone: {config.family}, width {config.hidden_size}, {blocks} blocks",
            f"patches {patched} blocks (every {config.double_every}th double"
            + (f", every {config.single_every}th single)" if config.single_blocks else ")"),
            f"tokens: {config.identity_tokens} identity + {config.expression_tokens} expression of width "
            f"{config.token_width}; expression read as {config.expression}",
            f"{parameters / 1e6:.1f} M parameters, {next(self.parameters()).dtype}",
        ])


REEXPORT = "Export the adapter again (python training/train.py export ... --to ComfyUI/models/genaffect/...)."


def _block_count(layout: dict, prefix: str) -> int:
    return len({key[len(prefix):].split(".")[0] for key in layout if key.startswith(prefix)})


def load_dit_adapter(path: str) -> DiTAdapter:
    """An adapter file, checked before any weight memory is used: its metadata field by field, the block and
    layer counts it claims against the tensors it holds, then every shape and dtype against a copy built on
    the meta device; non-finite weights are refused."""
    metadata, layout = safetensors_layout(path, REEXPORT)
    config = DiTAdapterConfig.from_metadata(metadata, path)
    counts = (("double blocks patched", "after_double.", -(-config.double_blocks // config.double_every)),
              ("single blocks patched", "after_single.", -(-config.single_blocks // config.single_every)),
              ("resampler layers", "encoder.identity.layers.", config.resampler_depth))
    for what, prefix, claimed in counts:  # bounded by the file before a module is built
        held = _block_count(layout, prefix)
        if claimed != held:
            raise ModelFileError(f"{path}: its metadata describes {claimed} {what}, the file holds {held}; the file is "
                                 f"damaged. {REEXPORT}")
    try:
        with torch.device("meta"):
            adapter = DiTAdapter(config)
    except (RuntimeError, OverflowError) as error:  # sizes beyond what any tensor can hold
        raise ModelFileError(f"{path}: its metadata describes sizes no weight can have ({error}); the file is "
                             f"damaged. {REEXPORT}") from error
    dtype = check_layout(adapter, layout, path, REEXPORT)
    adapter = load_checked(adapter, path, dtype, REEXPORT)
    adapter.source = path
    return adapter.eval()


def check_backbone(config: DiTAdapterConfig, family: str, hidden_size: int, double_blocks: int,
                   single_blocks: int, source: str = "this adapter") -> None:
    """Explain why an adapter cannot patch a backbone, or return quietly."""
    def described(name, width, double, single):
        return f"{name} = {backbones.family(name).title}, width {width}, {double} double / {single} single blocks"

    found = described(family, hidden_size, double_blocks, single_blocks)
    wanted = described(config.family, config.hidden_size, config.double_blocks, config.single_blocks)
    if family != config.family:
        raise GenAffectInputError(f"{source} was trained for {wanted}; this MODEL is {found}. Use an adapter "
                                  f"trained on a {family} model, or load the {config.family} model it was made for.")
    if (hidden_size, double_blocks, single_blocks) != (config.hidden_size, config.double_blocks, config.single_blocks):
        raise GenAffectInputError(f"{source} was trained for {wanted}; this MODEL is {found}. The sizes must match: "
                                  "use the adapter trained for this checkpoint.")
