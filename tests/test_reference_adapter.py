"""The Reference Adapter: its LoRA file layouts load, and our bank-reading self-attention equals Arc2Face's
procedure (a clean UNet banks each block's self-attention input at timestep 0; the positive half of the
CFG batch attends to own ++ bank) on a tiny UNet with SD1.5's structure."""

from __future__ import annotations

import copy

import pytest
import torch
from genaffect.models.errors import GenAffectInputError, ModelFileError
from genaffect.models.generation.reference_adapter import bank_rows, load_reference_lora, reference_self_attention
from safetensors.torch import save_file
from tiny_sd15 import CONTEXT, ArcReferenceProcessor, published_reference_lora, tiny_unet

pytest.importorskip("diffusers")
pytest.importorskip("peft")

pytestmark = pytest.mark.torch_only  # torch alone: .ci/run's numpy-1.26 environment leaves it out (pytest.ini)


class OurReferenceProcessor:
    """Our attention hosted the way ComfyUI's attn1 patch + replacement host it: the layer projects
    ``own ++ bank`` for every row, then :func:`reference_self_attention` picks per row."""

    def __init__(self, bank, rows):
        self.bank, self.rows = bank, rows

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        picked = self.bank[[row or 0 for row in self.rows]]
        extended = torch.cat([hidden_states, picked], dim=1)
        q, k, v = attn.to_q(hidden_states), attn.to_k(extended), attn.to_v(extended)
        out = reference_self_attention(q, k, v, hidden_states.shape[1], self.rows, attn.heads)
        return attn.to_out[1](attn.to_out[0](out))


def _self_attention_names(unet):
    return [name for name in unet.attn_processors if name.endswith("attn1.processor")]


def _with(unet, make):
    from diffusers.models.attention_processor import AttnProcessor2_0

    hosted = copy.deepcopy(unet)
    hosted.set_attn_processor({name: make(name) if name.endswith("attn1.processor") else AttnProcessor2_0()
                               for name in hosted.attn_processors})
    return hosted


def test_bank_reading_self_attention_equals_arc2face_reference_adapter():
    torch.manual_seed(5)
    unet = tiny_unet()
    images = 2
    photo_latent = torch.randn(1, 4, 8, 8)
    identity = torch.randn(1, 77, CONTEXT)

    # write: a clean UNet at timestep 0 on the photo, conditioned on the identity (Arc2Face batches the
    # photo once per CFG row; every row is the same, so one row is the bank)
    banks = {name: [] for name in _self_attention_names(unet)}
    writer = _with(unet, lambda name: ArcReferenceProcessor("write", banks[name]))
    with torch.no_grad():
        writer(photo_latent.repeat(2 * images, 1, 1, 1), torch.zeros(2 * images).long(),
               identity.repeat(2 * images, 1, 1))
    assert all(len(bank) == 1 and bank[0].shape[0] == 2 * images for bank in banks.values())

    latents = torch.randn(2 * images, 4, 8, 8)
    context = torch.cat([torch.randn(images, 77, CONTEXT), identity.repeat(images, 1, 1)])  # uncond, cond
    t = torch.full((2 * images,), 500)
    reference = _with(unet, lambda name: ArcReferenceProcessor("read", banks[name]))
    rows = bank_rows(1, chunk_kinds=(1, 0), images=images)  # diffusers puts the negative half first
    ours = _with(unet, lambda name: OurReferenceProcessor(banks[name][0][:1], rows))
    plain = _with(unet, lambda name: ArcReferenceProcessor("write", []))
    with torch.no_grad():
        expected = reference(latents, t, context).sample
        got = ours(latents, t, context).sample
        without = plain(latents, t, context).sample
    assert (got - expected).abs().max() < 1e-5
    # the bank changes only the positive half
    assert (expected[images:] - without[images:]).abs().max() > 1e-3
    assert (got[:images] - without[:images]).abs().max() < 1e-5


def test_bank_rows_give_positive_rows_their_photo_and_others_none():
    assert bank_rows(1, (0, 1), 2) == [0, 0, None, None]
    assert bank_rows(3, (1, 0), 3) == [None, None, None, 0, 1, 2]
    with pytest.raises(GenAffectInputError, match="2 reference photos for a batch of 3 images"):
        bank_rows(2, (0,), 3)


def test_rows_without_a_photo_never_see_the_bank():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 6, 16), torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    out = reference_self_attention(q, k, v, 6, [None, 0], heads=2)
    from genaffect.models.generation.attention import attention_flat as plain_attention

    assert torch.allclose(out[0], plain_attention(q[:1], k[:1, :6], v[:1, :6], 2)[0], atol=1e-6)
    assert torch.allclose(out[1], plain_attention(q[1:], k[1:], v[1:], 2)[0], atol=1e-6)


@pytest.mark.parametrize("layout", ["diffusers", "peft"])
def test_reference_lora_in_diffusers_layouts_loads_keyed_by_unet_module(tmp_path, layout):
    unet = tiny_unet()
    path = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(published_reference_lora(unet, layout=layout), str(path))
    lora = load_reference_lora(str(path))
    assert len(lora.modules) == 16 * 4
    assert lora.modules[0] == "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"
    modules = dict(unet.named_modules())
    assert all(name in modules for name in lora.modules)


def test_files_that_are_not_a_unet_lora_are_refused_with_the_download(tmp_path):
    unet = tiny_unet()
    state = published_reference_lora(unet)
    state["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight"] = torch.zeros(4, 8)
    save_file(state, str(tmp_path / "te.safetensors"))
    with pytest.raises(ModelFileError, match="text_encoder.*huggingface.co/FoivosPar/Arc2Face"):
        load_reference_lora(str(tmp_path / "te.safetensors"))
    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3)}, str(tmp_path / "unet.safetensors"))
    with pytest.raises(ModelFileError, match="not the Reference Adapter's LoRA"):
        load_reference_lora(str(tmp_path / "unet.safetensors"))
    halves = {k: v for k, v in published_reference_lora(unet).items() if "to_q.lora.down" not in k}
    save_file(halves, str(tmp_path / "damaged.safetensors"))
    with pytest.raises(ModelFileError, match="attn1.to_q has no down"):
        load_reference_lora(str(tmp_path / "damaged.safetensors"))
    with pytest.raises(ModelFileError, match="does not exist"):
        load_reference_lora(str(tmp_path / "missing.safetensors"))
