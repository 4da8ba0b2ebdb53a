"""The DiT adapter's ComfyUI block replacement: the residual goes to the positive rows' image tokens only,
image i with expression i; outside the active range, or on negative rows, the block's output is untouched.
(ComfyUI's FLUX running these replacements is checked against diffusers in tests/integration.)"""

from __future__ import annotations

import pytest
import torch
from genaffect.models.errors import GenAffectInputError
from genaffect.models.generation.dit_adapter import DiTAdapter, DiTAdapterConfig, adapter_expression_input
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
    with pytest.raises(GenAffectInputError, match="3 expressions for a batch of 2 images"):
        block({"img": torch.randn(2, IMAGE, WIDTH), "transformer_options": {"cond_or_uncond": [0]}},
              {"original_block": untouched_block})


def test_adapter_trained_on_flame_refuses_blendshape_only_expressions():
    built = adapter(expression="flame")
    with pytest.raises(GenAffectInputError, match="FLAME-55"):
        adapter_expression_input(built.config, torch.rand(1, 52), None, 1)
    both = adapter_expression_input(built.config, torch.rand(1, 52), torch.rand(1, 55), 1)
    assert torch.equal(both[0, :52], torch.zeros(52)) and both[0, -2:].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("single", [False, True])
def test_reference_image_tokens_appended_by_an_editor_get_no_residual(single):
    """Kontext, FLUX.2 and Qwen-Image-Edit append reference latents after the generated image; ComfyUI
    records their counts in ``reference_image_num_tokens``. Only the generated tokens change."""
    built = adapter()
    block = AdapterBlock(built.after_single["0"] if single else built.after_double["0"], tokens_for(built, 1),
                         (1.0, 1.0), (10.0, 0.0), single=single)
    references = [4, 2]
    text = TEXT if single else 0
    hidden = torch.randn(2, text + IMAGE + sum(references), WIDTH)
    options = {"cond_or_uncond": [0], "reference_image_num_tokens": references, "sigmas": torch.tensor([1.0])}
    if single:
        options["img_slice"] = [TEXT, hidden.shape[1]]
    out = block({"img": hidden, "transformer_options": options}, {"original_block": untouched_block})["img"]
    assert torch.equal(out[:, :text], hidden[:, :text])
    assert torch.equal(out[:, text + IMAGE:], hidden[:, text + IMAGE:])
    assert (out[:, text:text + IMAGE] - hidden[:, text:text + IMAGE]).abs().min() > 0


def test_bf16_model_rows_take_the_adapter_in_bf16_from_fp32_identity_and_expressions():
    """On a GPU the block's tokens are bf16 and the adapter is cast to bf16, while identities and
    expressions arrive in fp32: the encoder must run in the adapter's dtype (this crashed every GPU run)."""
    built = adapter()
    tokens = tokens_for(built.to(torch.bfloat16), 2)
    assert tokens.identity.dtype == torch.float32 and tokens.expression.dtype == torch.float32
    block = AdapterBlock(built.after_double["0"], tokens, (1.0, 1.0), (10.0, 0.0), single=False)
    hidden = torch.randn(2, IMAGE, WIDTH, dtype=torch.bfloat16)
    out = block({"img": hidden, "transformer_options": {"cond_or_uncond": [0]}},
                {"original_block": untouched_block})["img"]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    fp32 = adapter()
    reference = AdapterBlock(fp32.after_double["0"], tokens_for(fp32, 2), (1.0, 1.0), (10.0, 0.0), single=False)
    want = reference({"img": hidden.float(), "transformer_options": {"cond_or_uncond": [0]}},
                     {"original_block": untouched_block})["img"]
    torch.testing.assert_close(out.float(), want, atol=0.05, rtol=0.05)
    assert (out.float() - hidden.float()).abs().max() > 0.05
