"""Per-image prompts folded into one CONDITIONING whose batch matches the latent batch."""

import pytest
import torch

from genaffect.models.errors import GenAffectInputError
from genaffect.nodes.conditioning_batch import stack_per_image


def prompt(tokens, seed, **extras):
    torch.manual_seed(seed)
    return [[torch.randn(1, tokens, 8), {"pooled_output": torch.randn(1, 8), **extras}]]


def test_one_prompt_is_shared_by_every_image_unchanged():
    one = prompt(77, 0)
    assert stack_per_image([one], 4) is one


def test_per_image_prompts_become_rows_in_order_with_their_pooled_outputs():
    prompts = [prompt(77, i, guidance=3.5) for i in range(3)]
    [[tensor, extras]] = stack_per_image(prompts, 3)
    assert tensor.shape == (3, 77, 8)
    for i, p in enumerate(prompts):
        assert torch.equal(tensor[i], p[0][0][0]) and torch.equal(extras["pooled_output"][i], p[0][1]["pooled_output"][0])
    assert extras["guidance"] == 3.5


def test_prompts_of_different_clip_chunk_counts_are_padded_by_repetition():
    [[tensor, _]] = stack_per_image([prompt(77, 0), prompt(154, 1)], 2)
    assert tensor.shape == (2, 154, 8)
    assert torch.equal(tensor[0, 77:], tensor[0, :77])


@pytest.mark.parametrize("conditionings, images, message", [
    ([prompt(77, 0)] * 2, 3, "2 positive conditionings for 3 images"),
    ([prompt(77, 0) + prompt(77, 1), prompt(77, 2)], 2, "one plain prompt"),
    ([prompt(77, 0), prompt(300, 1)], 2, "cannot be padded"),
    ([prompt(77, 0), [[torch.zeros(1, 77, 16), {}]]], 2, "different text encoders"),
])
def test_mismatches_are_explained(conditionings, images, message):
    with pytest.raises(GenAffectInputError, match=message):
        stack_per_image(conditionings, images)


def test_prompts_of_different_lengths_are_zero_padded_with_a_mask_for_a_model_that_reads_one():
    """Qwen-Image encodes prompts unpadded and honours an attention_mask: padding leaves each image as alone."""
    photo = [torch.randn(1, 16, 1, 4, 4)]
    prompts = [prompt(5, 0, reference_latents=photo), prompt(7, 1, reference_latents=photo),
               prompt(7, 2, reference_latents=photo, attention_mask=torch.tensor([[1, 1, 1, 1, 1, 1, 0]]))]
    [[tensor, extras]] = stack_per_image(prompts, 3, text_mask=True)
    assert tensor.shape == (3, 7, 8) and torch.equal(tensor[0, :5], prompts[0][0][0][0])
    assert tensor[0, 5:].abs().sum() == 0
    assert extras["attention_mask"].tolist() == [[1] * 5 + [0, 0], [1] * 7, [1] * 6 + [0]]
    assert extras["reference_latents"] is photo  # the one photo every image edits
    [[_, same_length]] = stack_per_image([prompt(7, 0), prompt(7, 1)], 2, text_mask=True)
    assert "attention_mask" not in same_length


def test_each_image_may_edit_its_own_photo_of_one_size_stacked_row_by_row_as_per_face_crops_need():
    one, other = [torch.zeros(1, 16, 1, 4, 4)], [torch.ones(1, 16, 1, 4, 4)]
    [[_, extras]] = stack_per_image([prompt(5, 0, reference_latents=one), prompt(5, 1, reference_latents=other)], 2)
    [stacked] = extras["reference_latents"]
    assert stacked.shape == (2, 16, 1, 4, 4) and torch.equal(stacked[0], one[0][0]) and torch.equal(stacked[1], other[0][0])
    larger = [torch.ones(1, 16, 1, 8, 8)]
    with pytest.raises(GenAffectInputError, match="different reference photos"):
        stack_per_image([prompt(5, 0, reference_latents=one), prompt(5, 1, reference_latents=larger)], 2)
    with pytest.raises(GenAffectInputError, match="different reference photos"):
        stack_per_image([prompt(5, 0, reference_latents=one), prompt(5, 1)], 2)


def test_a_mask_the_model_cannot_read_is_refused():
    with pytest.raises(GenAffectInputError, match="padding mask, which this model does not read"):
        stack_per_image([prompt(5, 0), prompt(5, 1, attention_mask=torch.ones(1, 5))], 2)
