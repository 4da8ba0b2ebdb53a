"""The Gen-AFFECT adapter hosted on a diffusers FLUX / SD3 transformer by forward hooks.

diffusers' FLUX double and single blocks and SD3's joint blocks return ``(context, image)``; the hook
after each block the adapter patches adds the adapter's residual to the image tokens, as ComfyUI's
block replacement does in ``nodes/dit_patch.py``. The trainer, the benchmark and the parity tests
host the adapter this way.
"""

from __future__ import annotations

import torch

from ..models.dit_adapter import DiTAdapter, DiTAdapterConfig


def backbone_sizes(transformer) -> dict:
    """family, hidden size and block counts of a diffusers FLUX / SD3 transformer."""
    config = transformer.config
    hidden = config.num_attention_heads * config.attention_head_dim
    if hasattr(transformer, "single_transformer_blocks"):
        return dict(family="flux", hidden_size=hidden, double_blocks=len(transformer.transformer_blocks),
                    single_blocks=len(transformer.single_transformer_blocks))
    return dict(family="sd3", hidden_size=hidden, double_blocks=len(transformer.transformer_blocks), single_blocks=0)


def adapter_config_for(transformer, **choices) -> DiTAdapterConfig:
    """An adapter configuration sized for ``transformer``; ``choices`` override the other fields."""
    return DiTAdapterConfig(**backbone_sizes(transformer), **choices)


class DiffusersHost:
    """Hooks ``adapter`` into ``transformer``; :meth:`condition` sets what the next forward passes see."""

    def __init__(self, transformer, adapter: DiTAdapter):
        from ..models.dit_adapter import check_backbone

        check_backbone(adapter.config, source="the adapter", **backbone_sizes(transformer))
        self.adapter = adapter
        self.tokens: tuple[torch.Tensor, torch.Tensor] | None = None
        self.strengths = (1.0, 1.0)
        self.handles = []
        groups = [("double", transformer.transformer_blocks)]
        if hasattr(transformer, "single_transformer_blocks"):
            groups.append(("single", transformer.single_transformer_blocks))
        for kind, blocks in groups:
            for index, block in enumerate(blocks):
                module = adapter.block(kind, index)
                if module is not None:
                    self.handles.append(block.register_forward_hook(self._after(module)))

    def condition(self, identity_tokens: torch.Tensor | None, expression_tokens: torch.Tensor | None = None,
                  identity_strength: float = 1.0, expression_strength: float = 1.0) -> None:
        """Tokens (B, T, width) for the rows of the next passes; None leaves the transformer unchanged."""
        self.tokens = None if identity_tokens is None else (identity_tokens, expression_tokens)
        self.strengths = (identity_strength, expression_strength)

    def _after(self, module):
        def hook(_, __, output):
            if self.tokens is None:
                return output
            context, image = output
            return context, image + module.delta(image, *self.tokens, *self.strengths)

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
