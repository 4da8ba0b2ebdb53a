"""Consistent attention core against a naive oracle: full attention over the whole set with an
explicit mask saying which keys each query may see."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from attention_oracle import oracle
from genaffect.models.errors import GenAffectInputError
from genaffect.models.generation.attention import attention as plain_attention
from genaffect.models.generation.consistent_attention import (
    Sharing,
    choose_borrowed,
    consistent_attention,
    make_generator,
    mask_tokens,
    token_grid,
)

pytestmark = pytest.mark.torch_only  # torch alone: .ci/run's numpy-1.26 environment leaves it out (pytest.ini)


LAYOUTS = {  # where the image tokens sit: all (UNet), after the text (FLUX), before the text (SD3)
    "unet": lambda length, text: slice(0, length),
    "flux": lambda length, text: slice(text, length),
    "sd3": lambda length, text: slice(0, length - text),
}

CASES = [
    # images, chunks, heads, length, text, dim, rate, anchors, layout, masked, stream_block
    (2, 1, 1, 16, 0, 8, 0.5, 0, "unet", False, 4096),
    (3, 2, 2, 24, 0, 16, 1.0, 0, "unet", False, 4096),
    (4, 2, 3, 20, 6, 8, 0.25, 0, "flux", False, 4096),
    (5, 1, 2, 18, 5, 8, 0.5, 2, "sd3", False, 4096),
    (4, 3, 2, 16, 4, 8, 0.7, 1, "flux", True, 4096),
    (6, 2, 2, 12, 0, 8, 0.5, 0, "unet", True, 5),  # streamed (above 5 borrowed keys) in blocks of 5
    (8, 2, 4, 20, 4, 16, 0.5, 2, "flux", False, 3),  # streamed, with anchors
    (3, 1, 1, 9, 2, 4, 0.1, 0, "sd3", False, 4096),  # rate so small some donors give nothing
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"N{c[0]}x{c[1]}-{c[8]}-r{c[6]}-a{c[7]}{'-mask' if c[9] else ''}{'-stream' if c[10] < 100 else ''}")
def test_matches_the_masked_full_attention_oracle(case):
    images, chunks, heads, length, text, dim, rate, anchors, layout, masked, block = case
    torch.manual_seed(hash(case) % 1000)
    q, k, v = (torch.randn(images * chunks, heads, length, dim) for _ in range(3))
    sharing = Sharing(rate, LAYOUTS[layout](length, text), anchors)
    image_count = len(range(length)[sharing.image_tokens])
    mask = torch.rand(images, image_count) > 0.4 if masked else None
    plan = choose_borrowed(sharing, images, chunks, image_count, make_generator(7, 3), mask)
    ours = consistent_attention(q, k, v, images=images, sharing=sharing, plan=plan,
                                stream_above=block, stream_block=block)
    assert (ours - oracle(q, k, v, images, sharing, plan)).abs().max() < 1e-5


def test_random_shapes_against_the_oracle():
    rng = torch.Generator().manual_seed(11)
    for trial in range(25):
        pick = lambda options: options[int(torch.randint(len(options), (1,), generator=rng))]  # noqa: E731
        images, chunks, heads, dim = pick([1, 2, 3, 5, 8]), pick([1, 2, 3]), pick([1, 2, 4]), pick([4, 8, 32])
        length, text = pick([6, 10, 17, 32]), pick([0, 2, 5])
        layout = pick(list(LAYOUTS)) if text else "unet"
        sharing = Sharing(pick([0.0, 0.2, 0.5, 1.0]), LAYOUTS[layout](length, text), pick([0, 1, 2]) if images >= 2 else 0)
        q, k, v = (torch.randn(images * chunks, heads, length, dim, generator=rng) for _ in range(3))
        image_count = len(range(length)[sharing.image_tokens])
        mask = (torch.rand(images, image_count, generator=rng) > 0.5) if trial % 3 == 0 else None
        plan = choose_borrowed(sharing, images, chunks, image_count, make_generator(trial, trial), mask)
        block = pick([4, 4096])
        ours = consistent_attention(q, k, v, images=images, sharing=sharing, plan=plan, stream_above=block, stream_block=block)
        assert (ours - oracle(q, k, v, images, sharing, plan)).abs().max() < 1e-5, trial


@pytest.mark.parametrize("block", [4096, 3], ids=["gathered", "streamed"])
def test_padded_text_keys_are_masked_for_own_keys_and_borrowed_keys_never(block):
    """A padded text encoder (Qwen-Image): each sequence's padding keys are masked, additively."""
    images, chunks, heads, length, text, dim = 3, 2, 2, 20, 6, 8
    torch.manual_seed(4)
    q, k, v = (torch.randn(images * chunks, heads, length, dim) for _ in range(3))
    padded = torch.zeros(images * chunks, length, dtype=torch.bool)
    for b, count in enumerate([0, 2, 3, 1, 0, 4]):  # prompts of different lengths, padded at the end
        padded[b, text - count:text] = True
    key_mask = torch.zeros(images * chunks, length).masked_fill(padded, torch.finfo(torch.float32).min)
    sharing = Sharing(0.5, LAYOUTS["flux"](length, text))
    plan = choose_borrowed(sharing, images, chunks, length - text, make_generator(3, 1))
    ours = consistent_attention(q, k, v, images=images, sharing=sharing, plan=plan, key_mask=key_mask,
                                stream_above=block, stream_block=block)
    assert (ours - oracle(q, k, v, images, sharing, plan, padded)).abs().max() < 1e-5
    off = consistent_attention(q, k, v, images=images, sharing=Sharing(0.0, sharing.image_tokens), plan=plan,
                               key_mask=key_mask)
    assert torch.equal(off, plain_attention(q, k, v, key_mask[:, None, None, :]))


@pytest.mark.parametrize("images, rate", [(1, 0.5), (4, 0.0)])
def test_one_image_or_rate_zero_is_exactly_plain_attention(images, rate):
    q, k, v = (torch.randn(images * 2, 2, 12, 8) for _ in range(3))
    sharing = Sharing(rate, slice(4, 12))
    ours = consistent_attention(q, k, v, images=images, sharing=sharing, generator=make_generator(1, 1))
    assert torch.equal(ours, plain_attention(q, k, v))


def test_same_seed_same_tokens_different_seed_different_tokens():
    sharing = Sharing(0.5, slice(0, 64))
    draw = lambda seed, step: choose_borrowed(sharing, 4, 2, 64, make_generator(seed, step))  # noqa: E731
    flat = lambda plan: [p.tolist() for chunk in plan for pairs in chunk for _, p in pairs]  # noqa: E731
    assert flat(draw(5, 3)) == flat(draw(5, 3))
    assert flat(draw(5, 3)) != flat(draw(6, 3))
    assert flat(draw(5, 3)) != flat(draw(5, 4))  # redrawn every step
    q, k, v = (torch.randn(8, 2, 64, 8) for _ in range(3))
    run = lambda seed: consistent_attention(q, k, v, images=4, sharing=sharing, generator=make_generator(seed, 0))  # noqa: E731
    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))


def test_anchors_make_everyone_borrow_only_from_the_anchors():
    plan = choose_borrowed(Sharing(0.5, slice(0, 10), anchors=2), 5, 1, 10, make_generator(0, 0))
    donors = [[j for j, _ in pairs] for pairs in plan[0]]
    assert donors == [[1], [0], [0, 1], [0, 1], [0, 1]]
    assert all(len(p) == 5 for pairs in plan[0] for _, p in pairs)


def test_crops_of_several_people_borrow_only_from_crops_of_the_same_person():
    """Per-face crops (Crop Faces): person 0 in images 0, 2, 3, person 1 in images 1 and 4; anchors are counted
    within each person."""
    groups = (0, 1, 0, 0, 1)
    plan = choose_borrowed(Sharing(0.5, slice(0, 10), groups=groups), 5, 1, 10, make_generator(0, 0))
    assert [[j for j, _ in pairs] for pairs in plan[0]] == [[2, 3], [4], [0, 3], [0, 2], [1]]
    anchored = choose_borrowed(Sharing(0.5, slice(0, 10), anchors=1, groups=groups), 5, 1, 10, make_generator(0, 0))
    assert [[j for j, _ in pairs] for pairs in anchored[0]] == [[], [], [0], [0], [1]]
    q, k, v = (torch.randn(10, 2, 10, 8) for _ in range(3))
    sharing = Sharing(0.5, slice(0, 10), groups=groups)
    ours = consistent_attention(q, k, v, images=5, sharing=sharing, generator=make_generator(3, 0))
    plan = choose_borrowed(sharing, 5, 2, 10, make_generator(3, 0))
    assert (ours - oracle(q, k, v, 5, sharing, plan)).abs().max() < 1e-5


def test_a_set_where_every_person_has_one_crop_is_exactly_plain_attention():
    q, k, v = (torch.randn(6, 2, 12, 8) for _ in range(3))
    sharing = Sharing(0.7, slice(4, 12), groups=(0, 1, 2))
    assert not sharing.shares(3)
    assert torch.equal(consistent_attention(q, k, v, images=3, sharing=sharing, generator=make_generator(1, 1)),
                       plain_attention(q, k, v))
    with pytest.raises(GenAffectInputError, match="2 people given for a set of 3 images"):
        Sharing(0.5, slice(0, 4), groups=(0, 1)).donors(0, 3)


def test_masked_tokens_are_the_only_ones_borrowed():
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:, 2:6] = True
    plan = choose_borrowed(Sharing(1.0, slice(4, 14)), 3, 1, 10, make_generator(0, 0), mask)
    for pairs in plan[0]:
        for _, positions in pairs:
            assert positions.tolist() == [6, 7, 8, 9]  # mask columns 2..5, offset by the 4 text tokens


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Sharing(1.5, slice(0, 8)), "between 0 and 1"),
        (lambda: Sharing(-0.1, slice(0, 8)), "between 0 and 1"),
        (lambda: consistent_attention(*(torch.randn(2, 1, 8, 4) for _ in range(3)), images=2,
                                      sharing=Sharing(0.5, slice(0, 8), anchors=3), generator=make_generator(0, 0)),
         "3 anchor images asked for, but the set has only 2"),
        (lambda: consistent_attention(*(torch.randn(3, 1, 8, 4) for _ in range(3)), images=2,
                                      sharing=Sharing(0.5, slice(0, 8)), generator=make_generator(0, 0)),
         "not a whole number of sets of 2"),
        (lambda: consistent_attention(*(torch.randn(2, 1, 8, 4) for _ in range(3)), images=2,
                                      sharing=Sharing(0.5, slice(0, 8)), generator=make_generator(0, 0),
                                      token_mask=torch.ones(2, 5, dtype=torch.bool)),
         r"token mask has shape \[2, 5\]; expected \[2, 8\]"),
    ],
    ids=["rate above 1", "rate below 0", "more anchors than images", "batch not a multiple", "mask of the wrong size"],
)
def test_bad_inputs_are_explained(make, message):
    with pytest.raises(GenAffectInputError, match=message):
        make()


PROBE = """
import sys, torch
sys.path.insert(0, {tests!r})
import conftest
from genaffect.models.generation.consistent_attention import Sharing, consistent_attention, make_generator

def status(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field))

torch.set_num_threads(1)
images = int(sys.argv[1])
q, k, v = (torch.randn(images, 4, 1024, 64) for _ in range(3))
consistent_attention(q[:2, :, :64], k[:2, :, :64], v[:2, :, :64], images=2,
                     sharing=Sharing(0.5, slice(0, 64)), generator=make_generator(0, 0))  # warm-up
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS:")
consistent_attention(q, k, v, images=images, sharing=Sharing(0.5, slice(0, 1024)), generator=make_generator(0, 0))
print(status("VmHWM:") - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="measures peak memory through Linux /proc")
def test_peak_memory_grows_linearly_with_the_number_of_images():
    # Peak resident memory above the inputs, each size in a fresh process (CPU has no allocator stats).
    # Linear growth doubles from 8 to 16 images; StoryDiffusion's dense (N*L)^2 mask would quadruple.

    script = PROBE.format(tests=os.path.dirname(os.path.abspath(__file__)))
    extra = {}
    for images in (4, 8, 16):  # the two ratios below use these three
        done = subprocess.run([sys.executable, "-c", script, str(images)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        extra[images] = int(done.stdout.split()[-1])
    assert extra[16] / extra[8] < 2.8, extra
    assert extra[16] / extra[4] < 6.0, extra


def test_region_masks_become_token_masks_and_wrong_sizes_are_explained():
    region = torch.zeros(1, 64, 96)
    region[:, :32, :] = 1.0  # top half
    tokens = mask_tokens(region, 3, token_grid((8, 12), 24))  # this block's grid: 4 x 6
    assert tokens.shape == (3, 24) and tokens[:, :12].all() and not tokens[:, 12:].any()
    with pytest.raises(GenAffectInputError, match="one mask for all images or one per image"):
        mask_tokens(torch.zeros(2, 64, 96), 3, (4, 6))
    with pytest.raises(GenAffectInputError, match="do not form a downscaled grid"):
        token_grid((8, 12), 25)


def test_an_empty_or_nan_region_mask_is_an_error_and_a_partly_empty_one_a_warning(caplog):
    import logging

    with pytest.raises(GenAffectInputError, match="covers no image token at this block's 4x6 grid"):
        mask_tokens(torch.zeros(1, 64, 96), 3, (4, 6))
    with pytest.raises(GenAffectInputError, match="NaN or infinite"):
        mask_tokens(torch.full((1, 64, 96), float("nan")), 3, (4, 6))
    partly = torch.zeros(3, 64, 96)
    partly[0, :32] = 1.0
    with caplog.at_level(logging.WARNING):
        tokens = mask_tokens(partly, 3, (4, 6))
    assert tokens[0].any() and not tokens[1:].any() and "image(s) [2, 3] covers no token" in caplog.text
