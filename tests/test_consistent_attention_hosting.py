"""The ComfyUI-side callables of consistent attention, called with the arguments ComfyUI passes them:
the DiT attention override (in each family's token layout, reference images included), the UNet
self-attention replacement and the per-call layout recorder. The real ComfyUI models run them in
tests/integration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attention_oracle import oracle
from genaffect.models.errors import GenAffectInputError
from genaffect.models.generation.backbones import FAMILIES, TokenLayout
from genaffect.models.generation.consistent_attention import (
    ConsistencySettings,
    Sharing,
    choose_borrowed,
    make_generator,
)
from genaffect.nodes.hosting.consistent_attention import (
    LAYOUT_KEY,
    CallLayout,
    JointAttentionShare,
    LayoutRecorder,
    SelfAttentionShare,
    salt_of,
)

pytestmark = pytest.mark.torch_only  # torch alone: .ci/run's numpy-1.26 environment leaves it out (pytest.ini)


def comfy_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                    **kwargs):
    """ComfyUI's attention-function contract (comfy/ldm/modules/attention.py, attention_pytorch)."""
    if not skip_reshape:
        batch, _, width = q.shape
        q, k, v = (t.view(batch, -1, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    if mask is not None and mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask is not None and mask.ndim == 3:
        mask = mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if not skip_output_reshape:
        out = out.transpose(1, 2).reshape(out.shape[0], -1, heads * out.shape[-1])
    return out


def layout(images=3, text=4, image=12, step=2, active=True, references=0):
    return CallLayout(images=images, latent_size=(6, 8), step=step, active=active, text_tokens=text, image_tokens=image,
                      reference_tokens=references)


SETTINGS = ConsistencySettings(rate=0.5, anchors=0, seed=123)


def expected(q, k, v, images, image_tokens, settings, step, salt, kinds=None):
    """The oracle with the plan the host must have drawn (same seed, step, block salt, chunk kind)."""
    sharing = Sharing(settings.rate, image_tokens, settings.anchors)
    count = len(range(q.shape[2])[image_tokens])
    kinds = kinds or range(q.shape[0] // images)
    plan = [choose_borrowed(sharing, images, 1, count, make_generator(settings.seed, step, salt + 7_919 * kind))[0]
            for kind in kinds]
    return oracle(q, k, v, images, sharing, plan)


def test_each_conditioning_draws_the_same_tokens_whether_batched_together_or_alone():
    torch.manual_seed(5)
    q, k, v = (torch.randn(6, 2, 16, 8) for _ in range(3))  # uncond set, then cond set
    share = lambda q_, k_, v_, kinds: SETTINGS.share(q_, k_, v_, images=3, image_tokens=slice(4, 16),  # noqa: E731
                                                     latent_size=(6, 2), step=1, salt=9, chunk_kinds=kinds)
    together = share(q, k, v, (1, 0))
    assert torch.equal(together[:3], share(q[:3], k[:3], v[:3], (1,)))
    assert torch.equal(together[3:], share(q[3:], k[3:], v[3:], (0,)))


@pytest.mark.parametrize("host", ["flux", "sd3"])
def test_joint_override_matches_the_oracle_in_each_hosts_tensor_layout(host):
    torch.manual_seed(0)
    heads, dim, text, image, images, chunks = 2, 8, 4, 12, 3, 2
    q, k, v = (torch.randn(images * chunks, heads, text + image, dim) for _ in range(3))
    call = layout(images=images, text=text, image=image)
    options = {LAYOUT_KEY: call, "block_type": "double", "block_index": 1}
    override = JointAttentionShare(SETTINGS)
    if host == "flux":  # FLUX hands (B, H, L, D) after RoPE and wants (B, L, H*D) back
        out = override(comfy_attention, q, k, v, heads, skip_reshape=True, mask=None, transformer_options=options)
    else:  # SD3 hands (B, L, H*D), heads by keyword
        flat = [t.transpose(1, 2).reshape(images * chunks, text + image, heads * dim) for t in (q, k, v)]
        out = override(comfy_attention, *flat, heads=heads, transformer_options=options)
    want = expected(q, k, v, images, slice(text, text + image), SETTINGS, 2, salt_of("double", 1, text + image))
    assert out.shape == (images * chunks, text + image, heads * dim)
    assert (out - want.transpose(1, 2).reshape(out.shape)).abs().max() < 1e-5
    assert call.shared_calls == 1


def test_joint_override_shares_sd3_image_only_self_attention():
    torch.manual_seed(1)
    q, k, v = (torch.randn(4, 1, 12, 8) for _ in range(3))
    options = {LAYOUT_KEY: layout(images=2, text=5, image=12)}
    out = JointAttentionShare(SETTINGS)(comfy_attention, q, k, v, 1, skip_reshape=True, skip_output_reshape=True,
                                        transformer_options=options)
    want = expected(q, k, v, 2, slice(0, 12), SETTINGS, 2, salt_of(None, None, 12))
    assert (out - want).abs().max() < 1e-5


def test_joint_override_passes_through_when_inactive_or_unrecognised_and_chains_the_previous_override():
    calls = []

    def previous(func, *args, **kwargs):
        calls.append(args[0].shape)
        return func(*args, **kwargs)

    override = JointAttentionShare(SETTINGS, previous)
    q, k, v = (torch.randn(6, 2, 16, 8) for _ in range(3))
    plain = comfy_attention(q, k, v, 2, skip_reshape=True)
    for options in ({}, {LAYOUT_KEY: layout(active=False)}, {LAYOUT_KEY: layout(images=1)},
                    {LAYOUT_KEY: layout(text=4, image=40)}):  # 16 tokens: not this layout, e.g. a text-only block
        out = override(comfy_attention, q, k, v, 2, skip_reshape=True, transformer_options=options)
        assert torch.equal(out, plain)
    assert len(calls) == 4
    shared = override(comfy_attention, q, k, v, 2, skip_reshape=True, transformer_options={LAYOUT_KEY: layout(images=3)})
    assert len(calls) > 4 and not torch.allclose(shared, plain)  # the per-image calls went through `previous` too
    assert JointAttentionShare(SETTINGS, override).previous is previous  # a second node replaces, not nests


def test_rate_zero_override_is_exactly_the_host_attention():
    q, k, v = (torch.randn(6, 2, 16, 8) for _ in range(3))
    off = JointAttentionShare(ConsistencySettings(rate=0.0, seed=1))
    out = off(comfy_attention, q, k, v, 2, skip_reshape=True, transformer_options={LAYOUT_KEY: layout()})
    assert torch.equal(out, comfy_attention(q, k, v, 2, skip_reshape=True))


def test_a_per_query_attention_mask_while_sharing_is_refused_with_the_fix():
    q, k, v = (torch.randn(6, 2, 16, 8) for _ in range(3))
    with pytest.raises(GenAffectInputError, match=r"differs per query .*\(rate 0\)"):  # e.g. regional prompts
        JointAttentionShare(SETTINGS)(comfy_attention, q, k, v, 2, skip_reshape=True, mask=torch.zeros(6, 16, 16),
                                      transformer_options={LAYOUT_KEY: layout()})


def test_qwen_image_padded_prompt_mask_masks_own_padding_keys_while_sharing():
    """Qwen-Image hands a (B, 1, L) additive mask when its prompts were padded to one length."""
    torch.manual_seed(3)
    heads, dim, text, image, images = 2, 8, 4, 12, 3
    q, k, v = (torch.randn(images, heads, text + image, dim) for _ in range(3))
    padded = torch.zeros(images, text + image, dtype=torch.bool)
    padded[1, 2:text] = True  # image 1's prompt is two tokens shorter
    mask = torch.zeros(images, 1, text + image).masked_fill(padded[:, None], torch.finfo(torch.float32).min)
    options = {LAYOUT_KEY: layout(images=images, text=text, image=image), "block_type": "double", "block_index": 0}
    out = JointAttentionShare(SETTINGS)(comfy_attention, q, k, v, heads, mask, skip_reshape=True,
                                        skip_output_reshape=True, transformer_options=options)
    sharing = Sharing(SETTINGS.rate, slice(text, text + image), 0)
    plan = [choose_borrowed(sharing, images, 1, image, make_generator(SETTINGS.seed, 2, salt_of("double", 0, 16)))[0]]
    assert (out - oracle(q, k, v, images, sharing, plan, padded)).abs().max() < 1e-5
    off = JointAttentionShare(ConsistencySettings(rate=0.0, seed=1))(
        comfy_attention, q, k, v, heads, mask, skip_reshape=True, skip_output_reshape=True, transformer_options=options)
    assert torch.equal(off, comfy_attention(q, k, v, heads, mask, skip_reshape=True, skip_output_reshape=True))


def test_unet_self_attention_replacement_matches_the_oracle_and_is_exact_when_off():
    torch.manual_seed(2)
    heads, dim, tokens, images = 2, 8, 48, 4
    q, k, v = (torch.randn(images * 2, heads, tokens, dim) for _ in range(3))
    flat = [t.transpose(1, 2).reshape(images * 2, tokens, heads * dim) for t in (q, k, v)]
    extra = {"n_heads": heads, "dim_head": dim, "block": ("output", 3), "block_index": 0,
             LAYOUT_KEY: CallLayout(images=images, latent_size=(6, 8), step=5, active=True)}
    replace = SelfAttentionShare(SETTINGS, attention=comfy_attention)
    out = replace(*flat, extra)
    want = expected(q, k, v, images, slice(0, tokens), SETTINGS, 5, salt_of(("output", 3), 0))
    assert (out - want.transpose(1, 2).reshape(out.shape)).abs().max() < 1e-5
    extra[LAYOUT_KEY].active = False
    assert torch.equal(replace(*flat, extra), comfy_attention(*flat, heads))


def test_unet_region_mask_limits_borrowed_tokens_to_the_region():
    torch.manual_seed(3)
    heads, images = 1, 2
    q, k, v = (torch.randn(images, heads, 48, 4) for _ in range(3))  # latent 12x16 -> grid 6x8 at this block
    region = torch.zeros(1, 96, 128)
    region[:, :, :64] = 1.0  # left half of the image
    settings = ConsistencySettings(rate=1.0, seed=4, region=region)
    extra = {"n_heads": heads, LAYOUT_KEY: CallLayout(images=images, latent_size=(12, 16), step=0, active=True)}
    flat = [t.transpose(1, 2).reshape(images, 48, 4) for t in (q, k, v)]
    out = SelfAttentionShare(settings, attention=comfy_attention)(*flat, extra)
    left = torch.zeros(6, 8, dtype=torch.bool)
    left[:, :4] = True
    sharing = Sharing(1.0, slice(0, 48))
    plan = [[[(1, torch.nonzero(left.flatten()).flatten())], [(0, torch.nonzero(left.flatten()).flatten())]]]
    want = oracle(q, k, v, images, sharing, plan)
    assert (out - want.transpose(1, 2).reshape(out.shape)).abs().max() < 1e-5


class Executor:
    """Stands for ComfyUI's model call: runs one joint attention through the override, or none."""

    def __init__(self, attends: bool):
        self.attends = attends
        self.options = None

    def __call__(self, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        self.options = transformer_options
        if self.attends:
            call = transformer_options[LAYOUT_KEY]
            length = call.text_tokens + call.image_tokens + call.reference_tokens
            q = torch.randn(x.shape[0], 1, length, 4)
            JointAttentionShare(SETTINGS)(comfy_attention, q, q, q, 1, skip_reshape=True,
                                          transformer_options=transformer_options)
        return x


def test_layout_recorder_describes_the_call_without_touching_the_callers_options():
    recorder = LayoutRecorder(SETTINGS, FAMILIES["flux"], sigma_range=(10.0, 0.5), patch_size=2)
    executor = Executor(attends=True)
    options = {"cond_or_uncond": [0, 1], "sample_sigmas": torch.tensor([14.6, 6.0, 2.0, 0.0])}
    x = torch.zeros(6, 16, 7, 10)  # 2 sets of 3 images; 7x10 latent -> 4x5 tokens after padding
    recorder(executor, x, torch.full((6,), 2.1), None, torch.zeros(6, 9, 32), None, options)
    call = executor.options[LAYOUT_KEY]
    assert (call.images, call.latent_size, call.step, call.active) == (3, (7, 10), 2, True)
    assert (call.text_tokens, call.image_tokens, call.shared_calls) == (9, 20, 1)
    assert LAYOUT_KEY not in options
    recorder(executor, x, torch.full((6,), 12.0), None, torch.zeros(6, 9, 32), None, options)
    assert executor.options[LAYOUT_KEY].active is False  # before start_percent


def test_a_dit_call_in_which_nothing_was_shared_is_an_error_not_a_silent_no_op():
    recorder = LayoutRecorder(SETTINGS, FAMILIES["sd3"], sigma_range=(10.0, 0.0), patch_size=2)
    with pytest.raises(GenAffectInputError, match="nothing was shared"):
        recorder(Executor(attends=False), torch.zeros(4, 16, 8, 8), torch.full((4,), 1.0), None,
                 torch.zeros(4, 5, 32), None, {"cond_or_uncond": [0, 1]})


@pytest.mark.parametrize("family, text, generated, references", [
    ("qwen_image", 5, 12, 12),  # Qwen-Image-Edit: one photo as large as the image
    ("flux2", 7, 9, 4 + 6),  # FLUX.2: two reference photos of other sizes
    ("flux", 3, 16, 16),  # FLUX.1 Kontext
    ("chroma", 4, 10, 0),
])
def test_dit_layouts_share_only_generated_tokens_and_leave_reference_tokens_as_the_plain_model_has_them(
        family, text, generated, references):
    torch.manual_seed(len(family) + references)
    heads, dim, images, chunks = 2, 8, 3, 2
    tokens = TokenLayout(text, generated, references)
    q, k, v = (torch.randn(images * chunks, heads, tokens.length, dim) for _ in range(3))
    call = layout(images=images, text=text, image=generated, references=references)
    options = {LAYOUT_KEY: call, "block_type": "double", "block_index": 3}
    out = JointAttentionShare(SETTINGS)(comfy_attention, q, k, v, heads, skip_reshape=True,
                                        skip_output_reshape=True, transformer_options=options)
    want = expected(q, k, v, images, tokens.generated_slice, SETTINGS, 2, salt_of("double", 3, tokens.length))
    assert (out - want).abs().max() < 1e-5
    # reference (and text) queries attend to their own sequence only: exactly the plain model's rows
    plain = comfy_attention(q, k, v, heads, skip_reshape=True, skip_output_reshape=True)
    for kept in (tokens.reference_slice, slice(0, text)):
        torch.testing.assert_close(out[:, :, kept], plain[:, :, kept], atol=1e-6, rtol=0)
    assert not torch.allclose(out[:, :, tokens.generated_slice], plain[:, :, tokens.generated_slice])
    # and no image borrows a reference token: the plan draws from generated positions only
    sharing = Sharing(SETTINGS.rate, tokens.generated_slice)
    plan = choose_borrowed(sharing, images, 1, generated, make_generator(SETTINGS.seed, 2, 0))[0]
    borrowed = torch.cat([positions for pairs in plan for _, positions in pairs])
    assert borrowed.min() >= text and borrowed.max() < text + generated


def test_layout_recorder_counts_qwen_image_tokens_of_a_5d_latent_and_its_reference_latents():
    recorder = LayoutRecorder(SETTINGS, FAMILIES["qwen_image"], sigma_range=(10.0, 0.0), patch_size=2)
    executor = Executor(attends=True)
    x = torch.zeros(4, 16, 1, 6, 9)  # Qwen-Image's latent: (batch, channels, frames, height, width)
    references = [torch.zeros(1, 16, 1, 8, 8), torch.zeros(1, 16, 1, 5, 4)]  # ComfyUI pads each to 2x2 patches
    recorder(executor, x, torch.full((4,), 1.0), None, torch.zeros(4, 11, 64), None, {"cond_or_uncond": [0, 1]},
             ref_latents=references)
    call = executor.options[LAYOUT_KEY]
    assert (call.images, call.text_tokens, call.image_tokens, call.reference_tokens) == (2, 11, 3 * 5, 16 + 6)
    assert call.shared_calls == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bf16_and_fp16_joint_override_matches_the_fp32_oracle_on_an_edit_layout(dtype):
    """GPUs run the DiTs in bf16/fp16: the shared attention keeps the model's dtype and its accuracy."""
    torch.manual_seed(7)
    heads, dim, images = 2, 16, 3
    tokens = TokenLayout(text=5, generated=12, references=12)
    q, k, v = (torch.randn(images * 2, heads, tokens.length, dim) for _ in range(3))
    options = {LAYOUT_KEY: layout(images=images, text=5, image=12, references=12), "block_type": "single",
               "block_index": 0}
    out = JointAttentionShare(SETTINGS)(comfy_attention, q.to(dtype), k.to(dtype), v.to(dtype), heads,
                                        skip_reshape=True, skip_output_reshape=True, transformer_options=options)
    want = expected(q, k, v, images, tokens.generated_slice, SETTINGS, 2, salt_of("single", 0, tokens.length))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=2e-2)
