"""The Expression Adapter: published file layouts load, and our decoupled cross-attention equals
diffusers' IP-Adapter attention processors on the same weights, layer for layer in diffusers' order."""

from __future__ import annotations

import copy

import pytest
import torch
from genaffect.models.errors import GenAffectInputError, ModelFileError
from genaffect.models.generation.expression_adapter import (
    convert_to_safetensors,
    decoupled_cross_attention,
    expression_rows,
    load_expression_adapter,
)
from tiny_sd15 import CONTEXT, FLAME_SIZE, cross_attention_widths, published_adapter, tiny_unet

pytest.importorskip("diffusers")

pytestmark = pytest.mark.torch_only  # torch alone: .ci/run's numpy-1.26 environment leaves it out (pytest.ini)


class DecoupledProcessor:
    """Hosts our attention in a diffusers UNet the way ComfyUI's attn2 replacement does: q, k, v are
    projected by the layer, the expression keys/values by our adapter, then the layer's ``to_out``."""

    def __init__(self, adapter, layer, tokens, scale):
        self.adapter, self.layer, self.tokens, self.scale = adapter, layer, tokens, scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        q, k, v = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        k_ip, v_ip = self.adapter.keys_values(self.layer, self.tokens)
        out = decoupled_cross_attention(q, k, v, k_ip, v_ip, attn.heads, self.scale)
        return attn.to_out[1](attn.to_out[0](out))


def with_our_adapter(unet, adapter, tokens, scale):
    from diffusers.models.attention_processor import AttnProcessor2_0

    ours = copy.deepcopy(unet)
    processors, layer = {}, 0
    for name in ours.attn_processors:
        if name.endswith("attn2.processor"):
            processors[name] = DecoupledProcessor(adapter, layer, tokens, scale)
            layer += 1
        else:
            processors[name] = AttnProcessor2_0()
    ours.set_attn_processor(processors)
    return ours


def with_diffusers_adapter(unet, published, scale):
    reference = copy.deepcopy(unet)
    reference._load_ip_adapter_weights([published], low_cpu_mem_usage=False)
    for processor in reference.attn_processors.values():
        if hasattr(processor, "scale"):
            processor.scale = [scale]
    return reference


def write_bin(tmp_path, published, name="exp_adapter.bin"):
    path = tmp_path / name
    torch.save(published, path)
    return str(path)


@pytest.mark.parametrize("kind", ["mlp", "linear", "full"])
def test_expression_cross_attention_equals_diffusers_ip_adapter_processors(tmp_path, kind):
    unet = tiny_unet()
    published = published_adapter(cross_attention_widths(unet), kind=kind)
    adapter = load_expression_adapter(write_bin(tmp_path, published))
    assert len(adapter.layers) == 16 and [layer.number for layer in adapter.layers] == list(range(1, 32, 2))

    torch.manual_seed(3)
    images = 2
    flame = torch.randn(images, FLAME_SIZE)
    rows = expression_rows(flame, chunk_kinds=(1, 0), images=images)  # uncond then cond, as diffusers orders CFG
    latents = torch.randn(2 * images, 4, 8, 8)
    text = torch.randn(2 * images, 7, CONTEXT)
    t = torch.tensor(500)
    scale = 0.7
    with torch.no_grad():
        expected = with_diffusers_adapter(unet, published, scale)(
            latents, t, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [rows[:, None, :]]}).sample
        ours = with_our_adapter(unet, adapter, adapter.tokens(rows), scale)(latents, t, encoder_hidden_states=text).sample
        plain = unet(latents, t, encoder_hidden_states=text).sample
    assert (ours - expected).abs().max().item() < 1e-5
    assert (ours - plain).abs().max().item() > 1e-2  # the adapter really acts


def test_expression_adapter_at_strength_zero_is_the_plain_cross_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 16, 32), torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    k_ip, v_ip = torch.randn(2, 4, 32), torch.randn(2, 4, 32)
    plain = decoupled_cross_attention(q, k, v, k_ip, v_ip, heads=4, scale=0.0)
    assert torch.equal(plain, torch.nn.functional.scaled_dot_product_attention(
        q.view(2, 16, 4, 8).transpose(1, 2), k.view(2, 7, 4, 8).transpose(1, 2),
        v.view(2, 7, 4, 8).transpose(1, 2)).transpose(1, 2).reshape(2, 16, 32))


def test_published_bin_converts_to_safetensors_that_load_the_same(tmp_path):
    widths = cross_attention_widths(tiny_unet())
    source = write_bin(tmp_path, published_adapter(widths))
    converted = convert_to_safetensors(source, str(tmp_path / "exp_adapter.safetensors"))
    a, b = load_expression_adapter(source), load_expression_adapter(converted)
    flame = torch.randn(3, FLAME_SIZE)
    assert torch.equal(a.tokens(flame), b.tokens(flame))
    assert all(torch.equal(x.weight, y.weight) for x, y in zip(a.to_v_ip, b.to_v_ip))
    assert a.token_count == 4 and a.context_width == CONTEXT


def test_expression_rows_give_positive_rows_their_image_and_negative_rows_zeros():
    flame = torch.arange(2 * FLAME_SIZE, dtype=torch.float32).view(2, FLAME_SIZE) + 1
    rows = expression_rows(flame, chunk_kinds=(0, 1), images=2)
    assert torch.equal(rows[:2], flame) and torch.count_nonzero(rows[2:]) == 0
    shared = expression_rows(flame[:1], chunk_kinds=(1, 0), images=3)
    assert torch.equal(shared[3:], flame[:1].expand(3, -1)) and torch.count_nonzero(shared[:3]) == 0


def test_expression_count_that_fits_no_batch_is_refused_with_both_counts():
    with pytest.raises(GenAffectInputError, match="3 expressions for a batch of 2 images"):
        expression_rows(torch.zeros(3, FLAME_SIZE), chunk_kinds=(0,), images=2)


def test_adapter_tokens_refuse_vectors_that_are_not_flame_55(tmp_path):
    adapter = load_expression_adapter(write_bin(tmp_path, published_adapter([32, 64])))
    with pytest.raises(GenAffectInputError, match="55"):
        adapter.tokens(torch.zeros(2, 52))


def test_image_ip_adapter_file_is_refused_as_not_an_expression_adapter(tmp_path):
    published = published_adapter([32])
    published["image_proj"] = {"latents": torch.zeros(1, 16, 32), "proj_in.weight": torch.zeros(32, 64)}
    with pytest.raises(ModelFileError, match="Perceiver resampler"):
        load_expression_adapter(write_bin(tmp_path, published))


def test_adapter_file_with_a_missing_layer_half_names_it(tmp_path):
    published = published_adapter([32, 64])
    del published["ip_adapter"]["3.to_v_ip.weight"]
    with pytest.raises(ModelFileError, match="layer 3"):
        load_expression_adapter(write_bin(tmp_path, published))


def test_checkpoint_without_adapter_entries_says_what_it_holds(tmp_path):
    path = write_bin(tmp_path, {"state_dict": {"conv.weight": torch.zeros(1)}})
    with pytest.raises(ModelFileError, match="image_proj and ip_adapter.*state_dict"):
        load_expression_adapter(path)


def test_pickle_with_code_is_refused_by_weights_only(tmp_path):
    path = tmp_path / "exp_adapter.bin"
    torch.save({"image_proj": {"x": torch.zeros(1)}, "ip_adapter": copy.copy}, path)  # a function object
    with pytest.raises(ModelFileError, match="weights_only=True"):
        load_expression_adapter(str(path))


def test_missing_adapter_file_names_the_download(tmp_path):
    with pytest.raises(ModelFileError, match="huggingface.co/FoivosPar/Arc2Face.*models/arc2face/exp_adapter"):
        load_expression_adapter(str(tmp_path / "exp_adapter.bin"))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("layout", ["bin", "safetensors"])
def test_an_adapter_file_with_non_finite_weights_is_refused_naming_the_weight(tmp_path, value, layout):
    state = published_adapter(cross_attention_widths(tiny_unet()))
    state["ip_adapter"]["3.to_v_ip.weight"][0, 0] = value
    path = write_bin(tmp_path, state)
    if layout == "safetensors":
        from safetensors.torch import save_file

        flat = {f"{group}.{key}": tensor for group in state for key, tensor in state[group].items()}
        path = str(tmp_path / "exp_adapter.safetensors")
        save_file(flat, path)
    with pytest.raises(ModelFileError, match=r"weight ip_adapter\.3\.to_v_ip\.weight holds NaN or infinite values"):
        load_expression_adapter(path)
