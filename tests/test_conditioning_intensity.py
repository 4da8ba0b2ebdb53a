"""Conditioning Intensity: each image's conditioning is the neutral one moved toward the targets by the
alphas its expression is made of (PixelSmile's e = e_n + alpha (e_t - e_n)), exact at alpha 0 and 1."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from genaffect.models.errors import GenAffectInputError
from genaffect.models.generation import conditioning_blend
from genaffect.nodes.conditioning_nodes import GenAffectConditioningIntensity
from genaffect.nodes.expression_nodes import (
    GenAffectExpressionInterpolate,
    GenAffectExpressionMix,
    GenAffectExpressionPreset,
)

g = torch.Generator().manual_seed(0)
PHOTO = {"reference_latents": [torch.randn(1, 16, 1, 8, 8, generator=g)]}


def encoded(tokens: int, seed: int, pooled: bool = False, **extras):
    gen = torch.Generator().manual_seed(seed)
    more = {"pooled_output": torch.randn(1, 5, generator=gen)} if pooled else {}
    return [[torch.randn(1, tokens, 8, generator=gen), {**PHOTO, "guidance": 2.5, **more, **extras}]]


def preset(names: str, intensity: float = 1.0):
    return GenAffectExpressionPreset().build(names, intensity)[0]


def run(neutral, targets, target_names, expression, max_alpha=1.5):
    return GenAffectConditioningIntensity().blend([neutral], targets, [preset(target_names)], [expression], [max_alpha])


def test_alpha_zero_and_one_give_the_neutral_and_the_target_conditionings_exactly():
    neutral, happy, sad = encoded(5, 1, pooled=True), encoded(7, 2, pooled=True), encoded(6, 3, pooled=True)
    wanted = GenAffectExpressionMix().mix(preset("happy, sad"), "1, 0")[0]  # happy alone, as a 1-row batch
    expressions = [preset("happy", 0.0), preset("happy"), preset("sad"), wanted]
    outputs = [run(neutral, [happy, sad], "happy, sad", e)[0][0][0] for e in expressions]
    for (tensor, extras), (want_tensor, want_extras) in zip(outputs, [neutral[0], happy[0], sad[0], happy[0]]):
        assert torch.equal(tensor, want_tensor) and torch.equal(extras["pooled_output"], want_extras["pooled_output"])
        assert "attention_mask" not in extras and extras["guidance"] == 2.5
        assert extras["reference_latents"] is PHOTO["reference_latents"]  # the photo, encoded once, shared


def test_intensities_and_a_transition_become_a_linear_sequence_of_alphas():
    neutral, happy = encoded(6, 1, pooled=True), encoded(6, 2, pooled=True)
    steps = GenAffectExpressionInterpolate().interpolate(preset("neutral"), preset("happy"), 5, "linear")[0]
    outputs, info = run(neutral, [happy], "happy", steps)
    assert [line.split(": ")[1] for line in info.splitlines()] == [f"happy {a:.3f}" for a in (0, .25, .5, .75, 1)]
    tensors = [c[0][0] for c in outputs]
    for alpha, tensor in zip((0, .25, .5, .75, 1), tensors):
        assert torch.allclose(tensor, neutral[0][0] + alpha * (happy[0][0] - neutral[0][0]), atol=1e-6)
    pooled = [c[0][1]["pooled_output"] for c in outputs]
    assert torch.allclose(pooled[2], (pooled[0] + pooled[4]) / 2, atol=1e-6)  # pooled text blends too (FLUX.1)


def test_a_mix_of_two_targets_blends_their_deltas():
    neutral, happy, surprised = encoded(4, 1), encoded(4, 2), encoded(4, 3)
    mixed = GenAffectExpressionMix().mix(preset("happy, surprised"), "7, 3")[0]
    [[[tensor, _]]], info = run(neutral, [happy, surprised], "happy, surprised", mixed)
    assert info.endswith("happy 0.700, surprised 0.300")
    want = neutral[0][0] + 0.7 * (happy[0][0] - neutral[0][0]) + 0.3 * (surprised[0][0] - neutral[0][0])
    assert torch.allclose(tensor, want, atol=1e-6)


def test_unequal_token_counts_are_aligned_at_the_first_token_and_zero_extended():
    neutral, happy = encoded(4, 1), encoded(6, 2)
    [[[tensor, extras]]], _ = run(neutral, [happy], "happy", preset("happy", 0.5))
    assert tensor.shape == (1, 6, 8) and "attention_mask" not in extras  # every position is kept by the target
    assert torch.allclose(tensor[:, :4], (neutral[0][0] + happy[0][0][:, :4]) / 2, atol=1e-6)
    assert torch.allclose(tensor[:, 4:], happy[0][0][:, 4:] / 2, atol=1e-6)  # absent in the neutral: fades in
    # padding carried by the inputs stays padding where every weighted input is padding
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    padded_target = [[happy[0][0], {**happy[0][1], "attention_mask": mask}]]
    short_neutral = [[neutral[0][0][:, :3], neutral[0][1]]]
    [[[tensor, extras]]], _ = run(short_neutral, [padded_target], "happy", preset("happy", 0.5))
    assert extras["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0]] and tensor.shape == (1, 6, 8)


def test_bad_inputs_are_explained(caplog):
    neutral, happy, sad = encoded(4, 1), encoded(4, 2), encoded(4, 3)
    with pytest.raises(GenAffectInputError, match="2 target conditionings for 1 target expressions"):
        run(neutral, [happy, sad], "happy", preset("happy"))
    with pytest.raises(GenAffectInputError, match=r"intensity 2\.00 of target 1, outside 0\.\.1\.5"):
        GenAffectConditioningIntensity().blend([neutral], [happy], [preset("happy", 0.5)], [preset("happy")], [1.5])
    other_photo = [[happy[0][0], {**happy[0][1], "reference_latents": [torch.zeros(1, 16, 1, 8, 8)]}]]
    with pytest.raises(GenAffectInputError, match="another reference photo"):
        run(neutral, [other_photo], "happy", preset("happy"))
    with pytest.raises(GenAffectInputError, match="another text encoder"):
        run(neutral, [[[torch.zeros(1, 4, 16), dict(PHOTO)]]], "happy", preset("happy"))
    with pytest.raises(GenAffectInputError, match="one plain prompt"):
        run(neutral + neutral, [happy], "happy", preset("happy"))
    with pytest.raises(GenAffectInputError, match="target 1 conditioning lacks the pooled text vector the neutral has"):
        run(encoded(4, 1, pooled=True), [happy], "happy", preset("happy", 0.5))
    broken = [[torch.full((1, 4, 8), float("nan")), dict(PHOTO)]]
    with pytest.raises(GenAffectInputError, match="target 1 conditioning holds NaN"):
        run(neutral, [broken], "happy", preset("happy", 0.5))
    with caplog.at_level(logging.WARNING):  # an expression the targets cannot make is reported, not dropped silently
        _, info = run(neutral, [happy], "happy", preset("wink left"))
    assert "not a blend of the targets" in info and "not a blend" in caplog.text


def test_alpha_fit_snaps_rounding_at_zero_and_one_and_reports_the_residual():
    targets = preset("happy, sad").blendshapes
    alphas, residual = conditioning_blend.fit_alphas(np.stack([targets[0], targets[0] * 0.3 + targets[1] * 0.6]),
                                                     targets)
    assert alphas[0].tolist() == [1.0, 0.0] and np.allclose(alphas[1], [0.3, 0.6], atol=1e-5)
    assert residual.max() < 1e-5


def test_nearest_blend_is_the_bounded_least_squares_optimum_not_the_clipped_unbounded_fit():
    # targets t1 = (1, 0), t2 = (1, 1) on two blendshapes; the expression (0, 1) is exactly -t1 + t2, so the exact
    # fit refuses it; within 0..1.5 the nearest blend minimises (a1 + a2)^2 + (a2 - 1)^2: a1 = 0, a2 = 0.5 (clipping
    # the unbounded (-1, 1) would give (0, 1), twice the error), and half of the expression's length is lost
    targets = np.zeros((2, 52), np.float32)
    targets[0, 1], targets[1, 1], targets[1, 2] = 1.0, 1.0, 1.0
    expression = np.zeros((1, 52), np.float32)
    expression[0, 2] = 1.0
    with pytest.raises(GenAffectInputError, match="intensity -1.00 of target 1"):
        conditioning_blend.fit_alphas(expression, targets)
    alphas, residual = conditioning_blend.fit_alphas(expression, targets, nearest=True)
    np.testing.assert_allclose(alphas, [[0.0, 0.5]], atol=1e-9)
    np.testing.assert_allclose(residual, [np.sqrt(0.5)], atol=1e-6)
    capped, _ = conditioning_blend.fit_alphas(expression * 4, targets, max_alpha=1.0, nearest=True)
    np.testing.assert_allclose(capped, [[0.0, 1.0]], atol=1e-9)  # the upper bound holds too


def test_a_measured_expression_drives_the_node_with_the_nearest_blend_and_the_loss_reported():
    # surprised = happily surprised minus some happy: no blend of these two targets within 0..1.5
    neutral, happy, happily_surprised = encoded(4, 1), encoded(4, 2), encoded(4, 3)
    targets, measured = preset("happy, happily surprised"), preset("surprised, happy")
    with pytest.raises(GenAffectInputError, match="outside 0"):
        GenAffectConditioningIntensity().blend([neutral], [happy, happily_surprised], [targets], [measured], [1.5],
                                               ["exact blend"])
    conditionings, info = GenAffectConditioningIntensity().blend(
        [neutral], [happy, happily_surprised], [targets], [measured], [1.5], ["nearest blend"])
    first = conditioning_blend.fit_alphas(measured.blendshapes[:1], targets.blendshapes, nearest=True)[0][0]
    assert first[0] == 0.0 and 0.0 < first[1] <= 1.5  # the happy share the exact fit wanted negative is 0
    assert len(conditionings) == 2 and "2 happy: happy 1.000, happily surprised 0.000" in info
    torch.testing.assert_close(conditionings[1][0][0], happy[0][0], rtol=0, atol=0)  # an exact blend stays exact


def test_mediapipes_neutral_score_of_an_estimated_face_does_not_change_the_alphas():
    targets = preset("happy, sad").blendshapes
    estimated = targets[0] * 0.5
    estimated[0] = 0.9  # MediaPipe's "_neutral" score, which presets leave at 0
    alphas, residual = conditioning_blend.fit_alphas(estimated[None], targets)
    assert np.allclose(alphas, [[0.5, 0.0]], atol=1e-6) and residual[0] < 1e-6


@pytest.mark.parametrize("neutral, targets, message", [
    ([], None, "the neutral conditioning must be one plain prompt"),
    ([[torch.zeros(1, 5, 8)]], None, "the neutral conditioning must be one plain prompt"),
    ([[torch.zeros(1, 5, 8), None]], None, "the neutral conditioning must be one plain prompt"),
    ([[torch.zeros(5, 8), {}]], None, "the neutral conditioning must be one plain prompt"),
    ("a prompt", None, "the neutral conditioning must be one plain prompt"),
    (encoded(5, 1, area=(64, 64, 0, 0)), None, "'area' is set on only the neutral"),
    (encoded(5, 1, mask=torch.ones(1, 8, 8)), None, "'mask' is set on only the neutral"),
    (encoded(5, 1, start_percent=0.0, end_percent=0.5), None, "'end_percent' is set on only the neutral"),
    (encoded(5, 1), [encoded(6, 2, hooks=object())], "'hooks' is set on only target 1"),
    (encoded(5, 1), [encoded(6, 2, guidance=4.0)], "'guidance' is set on the neutral and target 1 differently"),
    (encoded(5, 1, attention_mask=torch.ones(1, 3, dtype=torch.int64)), None, "attention_mask is not a 0/1 mask of its 5"),
    (encoded(5, 1, pooled=True), [[[torch.randn(1, 6, 8), {**PHOTO, "guidance": 2.5,
                                                            "pooled_output": torch.zeros(1, 7)}]]],
     r"pooled text vector is \[1, 7\], the neutral's \[1, 5\]"),
    ([[torch.zeros(1, 5, 8, dtype=torch.bfloat16), {**PHOTO, "guidance": 2.5}]], None, "torch.float32, the neutral"),
    (encoded(5, 1), [], "no target conditionings"),
    (encoded(5, 1), ["a prompt"], "the target 1 conditioning must be one plain prompt"),
])
def test_conditionings_that_are_not_plain_text_encoder_output_are_refused_naming_which_and_why(neutral, targets,
                                                                                             message):
    """A blend moves only the text: anything else on one side (an area, a mask, a timestep range, guidance, hooks) would
    be dropped or kept from the neutral silently, so it must be the same on all of them."""
    targets = [encoded(6, 2)] if targets is None else targets
    with pytest.raises(GenAffectInputError, match=message):
        run(neutral, targets, "happy", preset("happy", 0.5))


def test_settings_shared_by_the_neutral_and_every_target_are_kept():
    shared = {"area": (64, 64, 0, 0), "strength": 1.0}
    out, _ = run(encoded(5, 1, **shared), [encoded(6, 2, **shared)], "happy", preset("happy", 0.5))
    assert out[0][0][1]["area"] == (64, 64, 0, 0) and out[0][0][1]["guidance"] == 2.5


def test_intensity_up_to_one_and_a_half_comes_back_as_its_alpha_for_every_pixelsmile_category():
    """Exaggerated presets clip their strongest movements at 1; the fit, in the estimator's space, leaves the clipped
    values out and finds the intensity from the rest (fitting the clipped recipes capped it near 1.2)."""
    from genaffect.models.expression.expression_library import library, pixelsmile

    entries = library()
    for category in pixelsmile()["categories"]:
        name = next(n for n, e in entries.items() if list(e.pixelsmile) == [category])
        target = preset(name)
        for intensity in (0.3, 1.0, 1.25, 1.5):
            exaggerated = preset(name, intensity)
            assert exaggerated.estimator_blendshapes.max() <= 1.0
            neutral, encoded_target = encoded(4, 1), encoded(4, 2)
            _, info = GenAffectConditioningIntensity().blend([neutral], [encoded_target], [target], [exaggerated],
                                                             [1.5])
            alpha = float(info.rsplit(" ", 1)[1].split()[0]) if "not a blend" not in info else None
            assert alpha == pytest.approx(intensity, abs=2e-3), (category, name, intensity, info)
