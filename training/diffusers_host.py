"""The Gen-AFFECT adapter hosted on a diffusers transformer by forward hooks.

Which blocks exist and what they return comes from the family's record (``models/generation/backbones.py``):
double blocks of every family, and FLUX.1's and Chroma's single blocks, return ``(context, image)``;
FLUX.2's single blocks return one ``[text ; image]`` tensor. The hook after each block the adapter
patches adds the adapter's residual to the *generated* image tokens (an editor's reference latents,
appended after them, get none), as ComfyUI's block replacement does in
``nodes/hosting/dit_adapter.py``. The trainer, the benchmark and the parity tests host the adapter
this way.
"""

from __future__ import annotations

import torch

from ..models.generation.backbones import diffusers_family, diffusers_sizes
from ..models.generation.dit_adapter import DiTAdapter, DiTAdapterConfig, check_backbone


def adapter_config_for(transformer, **choices) -> DiTAdapterConfig:
    """An adapter configuration sized for ``transformer`` and placed as its family's record says;
    ``choices`` override the other fields."""
    double_every, single_every = diffusers_family(transformer).adapter_every
    return DiTAdapterConfig(**{"double_every": double_every, "single_every": single_every,
                               **diffusers_sizes(transformer), **choices})


class DiffusersHost:
    """Hooks ``adapter`` into ``transformer``; :meth:`condition` sets what the next forward passes see."""

    def __init__(self, transformer, adapter: DiTAdapter):
        backbone = diffusers_family(transformer)
        check_backbone(adapter.config, source="the adapter", **diffusers_sizes(transformer))
        self.adapter = adapter
        self.tokens: tuple[torch.Tensor, torch.Tensor] | None = None
        self.strengths = (1.0, 1.0)
        self.generated: int | None = None  # generated image tokens; None: the whole image stream
        self.text = 0  # the text tokens in front of a joined [text ; image] stream, read at each forward
        self.handles = []
        if backbone.diffusers_single_joined:
            self.handles.append(transformer.register_forward_pre_hook(self._read_text, with_kwargs=True))
        groups = [("double", getattr(transformer, backbone.diffusers_double), False)]
        if backbone.diffusers_single:
            groups.append(("single", getattr(transformer, backbone.diffusers_single), backbone.diffusers_single_joined))
        for kind, blocks, joined in groups:
            for index, block in enumerate(blocks):
                module = adapter.block(kind, index)
                if module is not None:
                    self.handles.append(block.register_forward_hook(self._after(module, joined)))

    def condition(self, identity_tokens: torch.Tensor | None, expression_tokens: torch.Tensor | None = None,
                  identity_strength: float = 1.0, expression_strength: float = 1.0,
                  generated_tokens: int | None = None) -> None:
        """Tokens (B, T, width) for the rows of the next passes; None leaves the transformer unchanged.
        ``generated_tokens``: how many image tokens are generated when reference latents follow them."""
        self.tokens = None if identity_tokens is None else (identity_tokens, expression_tokens)
        self.strengths = (identity_strength, expression_strength)
        self.generated = generated_tokens

    def _read_text(self, _, args, kwargs):
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        self.text = 0 if context is None else context.shape[1]

    def _after(self, module, joined: bool):
        def hook(_, __, output):
            if self.tokens is None:
                return output
            context, hidden = (None, output) if joined else output
            start = self.text if joined else 0
            end = hidden.shape[1] if self.generated is None else start + self.generated
            image = hidden[:, start:end]
            image = image + module.delta(image, *self.tokens, *self.strengths)
            if (start, end) != (0, hidden.shape[1]):  # text or reference tokens around it stay as they are
                image = torch.cat([hidden[:, :start], image, hidden[:, end:]], dim=1)
            return image if joined else (context, image)

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
