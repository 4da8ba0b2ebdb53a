"""The DiT adapter's ComfyUI block replacement: the residual goes to the positive rows' image tokens only,
image i with expression i; outside the active range, or on negative rows, the block's output is untouched.
(ComfyUI's FLUX running these replacements is checked against diffusers in tests/integration.)"""

from __future__ import annotations

import pytest
import torch

from genaffect.models.dit_adapter import DiTAdapter, DiTAdapterConfig, adapter_expression_input
from genaffect.models.errors import GenAffectInputError
from genaffect.nodes.hosting.dit_adapter import AdapterBlock, AdapterTokens

from tiny_dit import as_trained

TEXT, IMAGE, WIDTH = 3, 5, 32


def adapter(**overrides) -> DiTAdapter:
    torch.manual_seed(0)
    built = DiTAdapter(DiTAdapterConfig(family="flux", hidden_size=WIDTH, double_blocks=2, single_blocks=4,
                                        token_width=16, identity_tokens=2, expression_tokens=2, heads=2, head_dim=8,
                                        resampler_depth=1, **overrides)).eval()
    return as_trained(built, std=0.1)


def tokens_for(built: DiTAdapter, expressions: int) -> AdapterTokens:
    g = torch.Generator().manual_seed(1)
    expression = adapter_expression_input(built.config, torch.rand(expressions, 52, generator=g), None, expressions)
    return AdapterTokens(built, torch.randn(1, 512, generator=g), expression)


def untouched_block(args):
    return {"img": args["img"]}


def test_single_block_residual_reaches_positive_image_tokens_with_their_own_expression():
    built = adapter()
    tokens = tokens_for(built, 2)
    block = AdapterBlock(built.after_single["0"], tokens, (1.0, 1.0), (10.0, 0.0), single=True)
    hidden = torch.randn(4, TEXT + IMAGE, WIDTH)  # [negative x2 ; positive x2], [text ; image] tokens
    options = {"cond_or_uncond": [1, 0], "img_slice": [TEXT, TEXT + IMAGE], "sigmas": torch.tensor([1.0])}
    out = block({"img": hidden, "transformer_options": options}, {"original_block": untouched_block})["img"]
    assert torch.equal(out[:2], hidden[:2]) and torch.equal(out[:, :TEXT], hidden[:, :TEXT])
    with torch.no_grad():
        identity_tokens, expression_tokens = built.encoder(tokens.identity, tokens.expression)
        for image in range(2):
            delta = built.after_single["0"].delta(hidden[2 + image:3 + image, TEXT:], identity_tokens,
                                                  expression_tokens[image:image + 1], 1.0, 1.0)
            torch.testing.assert_close(out[2 + image, TEXT:], hidden[2 + image, TEXT:] + delta[0])
    assert (out[2, TEXT:] - out[3, TEXT:] - (hidden[2, TEXT:] - hidden[3, TEXT:])).abs().max() > 1e-6


def test_outside_the_active_range_the_block_output_is_returned_unchanged():
    built = adapter()
    block = AdapterBlock(built.after_double["0"], tokens_for(built, 1), (1.0, 1.0), (0.8, 0.2), single=False)
    hidden = torch.randn(1, IMAGE, WIDTH)
    for sigma, changed in ((0.9, False), (0.5, True), (0.1, False)):
        options = {"cond_or_uncond": [0], "sigmas": torch.tensor([sigma])}
        out = block({"img": hidden, "transformer_options": options}, {"original_block": untouched_block})["img"]
        assert torch.equal(out, hidden) != changed


def test_a_replacement_already_on_the_block_runs_inside_the_adapter():
    built = adapter()
    calls = []

    def other(args, extra):
        calls.append(True)
        return {"img": extra["original_block"](args)["img"] * 2}

    block = AdapterBlock(built.after_double["0"], tokens_for(built, 1), (0.0, 0.0), (1.0, 0.0), single=False,
                         inner=other)
    hidden = torch.randn(1, IMAGE, WIDTH)
    out = block({"img": hidden, "transformer_options": {}}, {"original_block": untouched_block})["img"]
    assert calls and torch.equal(out, hidden * 2)


def test_expression_count_that_fits_no_latent_batch_names_both_counts():
    built = adapter()
    block = AdapterBlock(built.after_double["0"], tokens_for(built, 3), (1.0, 1.0), (1.0, 0.0), single=False)
    with pytest.raises(GenAffectInputError, match="3 expressions for a latent batch of 2"):
        block({"img": torch.randn(2, IMAGE, WIDTH), "transformer_options": {"cond_or_uncond": [0]}},
              {"original_block": untouched_block})


def test_adapter_trained_on_flame_refuses_blendshape_only_expressions():
    built = adapter(expression="flame")
    with pytest.raises(GenAffectInputError, match="FLAME-55"):
        adapter_expression_input(built.config, torch.rand(1, 52), None, 1)
    both = adapter_expression_input(built.config, torch.rand(1, 52), torch.rand(1, 55), 1)
    assert torch.equal(both[0, :52], torch.zeros(52)) and both[0, -2:].tolist() == [0.0, 1.0]
