"""The Gen-AFFECT DiT adapter: an exact no-op untrained or at strength 0 on tiny FLUX.1, FLUX.2, Qwen-Image
and SD3, acting on generated image tokens only (never on text or an editor's reference images), running in
bf16, placed after PuLID-FLUX's blocks, saved with metadata that is checked against the backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from genaffect.models.errors import GenAffectInputError, ModelFileError
from genaffect.models.expression.batch import ExpressionBatch
from genaffect.models.expression.expression_library import presets
from genaffect.models.face.identity import Identity
from genaffect.models.generation.backbones import diffusers_sizes
from genaffect.models.generation.dit_adapter import (
    DiTAdapter,
    DiTAdapterConfig,
    adapter_expression_input,
    check_backbone,
    expression_input,
    load_dit_adapter,
)
from genaffect.nodes import dit_nodes
from genaffect.training.diffusers_host import DiffusersHost
from tiny_dit import GENERATED, TEXT, as_trained, run, tiny_flux, tiny_flux2, tiny_qwen_image, tiny_sd3

pytest.importorskip("diffusers")
BACKBONES = {"flux": tiny_flux, "sd3": tiny_sd3, "flux2": tiny_flux2, "qwen_image": tiny_qwen_image}
REFERENCES = {"flux2": 2, "qwen_image": 1}  # reference images after the generated ones (instruction editing)


def tiny_adapter(model, **overrides) -> DiTAdapter:
    torch.manual_seed(3)
    config = DiTAdapterConfig(**diffusers_sizes(model), token_width=32, identity_tokens=4, expression_tokens=3,
                              heads=2, head_dim=8, resampler_depth=1, **overrides)
    return DiTAdapter(config).eval()


def tokens_for(adapter, batch=2):
    g = torch.Generator().manual_seed(9)
    identity = torch.randn(batch, 512, generator=g)
    expression = expression_input(torch.rand(batch, 52, generator=g), None, batch)
    with torch.no_grad():
        return adapter.encoder(identity, expression)


@pytest.mark.torch_only
@pytest.mark.parametrize("family", list(BACKBONES))
def test_untrained_adapter_and_strength_zero_leave_the_output_bit_identical(family):
    model, references = BACKBONES[family](), REFERENCES.get(family, 0)
    generated = GENERATED if references else None
    plain = run(model, references=references)
    adapter = tiny_adapter(model)
    identity_tokens, expression_tokens = tokens_for(adapter)
    host = DiffusersHost(model, adapter)
    host.condition(identity_tokens, expression_tokens, generated_tokens=generated)
    assert torch.equal(run(model, references=references), plain)  # zero-initialised output projections
    as_trained(adapter)
    host.condition(identity_tokens, expression_tokens, 0.0, 0.0, generated_tokens=generated)
    assert torch.equal(run(model, references=references), plain)
    host.condition(identity_tokens, expression_tokens, 1.0, 0.0, generated_tokens=generated)
    with_identity = run(model, references=references)
    host.condition(identity_tokens, expression_tokens, 1.0, 1.0, generated_tokens=generated)
    with_both = run(model, references=references)
    host.remove()
    assert torch.equal(run(model, references=references), plain)
    assert (with_identity - plain).abs().max() > 1e-4 and (with_both - with_identity).abs().max() > 1e-4


@pytest.mark.torch_only
@pytest.mark.parametrize("family", ["flux2", "qwen_image"])
def test_trained_adapter_adds_its_residual_to_generated_image_tokens_only(family):
    """At every patched block the hook's change is zero on text and reference tokens (FLUX.2's single
    blocks carry [text ; generated ; references] in one tensor)."""
    model = BACKBONES[family]()
    adapter = as_trained(tiny_adapter(model), std=0.2)
    changes = []

    def before(_, __, output):  # registered before the host's hook: sees the block's own output
        changes.append([output])

    def after(_, __, output):  # registered after it: sees what the host made of it
        changes[-1].append(output)

    blocks = [*model.transformer_blocks, *getattr(model, "single_transformer_blocks", [])]
    handles = [block.register_forward_hook(before) for block in blocks]
    host = DiffusersHost(model, adapter)
    handles += [block.register_forward_hook(after) for block in blocks]
    host.condition(*tokens_for(adapter), generated_tokens=GENERATED)
    run(model, references=REFERENCES[family])
    host.remove()
    for handle in handles:
        handle.remove()
    patched = 0
    for raw, seen in changes:
        joined = torch.is_tensor(raw)  # FLUX.2 single block: [text ; image] in one tensor
        if not joined:
            assert torch.equal(raw[0], seen[0])  # the text stream is never touched
            raw, seen = raw[1], seen[1]
        start = TEXT if joined else 0
        delta = seen - raw
        assert not delta[:, :start].any() and not delta[:, start + GENERATED:].any()
        patched += bool(delta[:, start:start + GENERATED].abs().max() > 0)
    assert patched == len(adapter.after_double) + len(adapter.after_single)


@pytest.mark.torch_only
@pytest.mark.parametrize("family", list(BACKBONES))
def test_bf16_backbone_and_adapter_run_together_and_match_fp32(family):
    """GPUs run these models in bf16: the adapter's encoder takes fp32 identities and expressions and must
    compute in the adapter's dtype (a float/bfloat16 mismatch crashed every GPU run once)."""
    references = REFERENCES.get(family, 0)
    generated = GENERATED if references else None
    outputs = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = BACKBONES[family]().to(dtype)
        adapter = as_trained(tiny_adapter(model), std=0.2).to(dtype)
        host = DiffusersHost(model, adapter)
        host.condition(*tokens_for(adapter), generated_tokens=generated)
        outputs[dtype] = run(model, references=references, dtype=dtype)
        host.remove()
        plain = run(model, references=references, dtype=dtype)
        assert (outputs[dtype] - plain).abs().max() > 0  # the adapter acted
    assert outputs[torch.bfloat16].dtype == torch.bfloat16
    torch.testing.assert_close(outputs[torch.bfloat16].float(), outputs[torch.float32], atol=0.1, rtol=0.05)


def test_adapter_sits_after_every_second_double_and_every_fourth_single_block():
    config = DiTAdapterConfig(family="flux", hidden_size=3072, double_blocks=19, single_blocks=38)
    assert config.double_positions == list(range(0, 19, 2)) and config.single_positions == list(range(0, 38, 4))
    assert len(config.double_positions) + len(config.single_positions) == 20  # PuLID-FLUX's 20 modules
    adapter = tiny_adapter(tiny_flux())
    assert sorted(adapter.after_double) == ["0", "2"] and sorted(adapter.after_single) == ["0", "4"]


def test_saved_adapter_loads_with_its_metadata_and_the_same_output(tmp_path):
    model = tiny_flux()
    adapter = as_trained(tiny_adapter(model))
    path = adapter.save(str(tmp_path / "adapter.safetensors"))
    loaded = load_dit_adapter(path)
    assert loaded.config == adapter.config
    tokens = tokens_for(adapter)
    host = DiffusersHost(model, adapter)
    host.condition(*tokens)
    expected = run(model)
    host.remove()
    host = DiffusersHost(model, loaded)
    host.condition(*tokens_for(loaded))
    assert torch.equal(run(model), expected)


def test_metadata_mismatch_explains_what_the_adapter_was_trained_for(tmp_path):
    flux_adapter = tiny_adapter(tiny_flux())
    sd3 = diffusers_sizes(tiny_sd3())
    with pytest.raises(GenAffectInputError, match="trained for flux = FLUX.1.* this MODEL is sd3 = "):
        check_backbone(flux_adapter.config, **sd3)
    wider = {**diffusers_sizes(tiny_flux()), "hidden_size": 3072}
    with pytest.raises(GenAffectInputError, match="width 32.*width 3072.*sizes must match"):
        check_backbone(flux_adapter.config, **wider)
    check_backbone(flux_adapter.config, **diffusers_sizes(tiny_flux()))


def test_files_that_are_not_adapters_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not a Gen-AFFECT DiT adapter"):
        load_dit_adapter(str(tmp_path / "other.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes(b"not a file")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        load_dit_adapter(str(tmp_path / "broken.safetensors"))
    adapter = tiny_adapter(tiny_flux())
    state = {k: v for k, v in adapter.state_dict().items() if not k.startswith("after_single.4")}
    save_file(state, str(tmp_path / "cut.safetensors"), metadata=adapter.config.metadata())
    with pytest.raises(ModelFileError, match="describes 2 single blocks patched, the file holds 1"):
        load_dit_adapter(str(tmp_path / "cut.safetensors"))


def test_expression_input_says_which_vectors_are_present():
    both = expression_input(torch.ones(2, 52), torch.ones(2, 55), 2)
    only_flame = expression_input(None, torch.ones(2, 55), 2)
    assert both.shape == (2, 109) and both[0, -2:].tolist() == [1.0, 1.0]
    assert only_flame[0, :52].abs().sum() == 0 and only_flame[0, -2:].tolist() == [0.0, 1.0]
    with pytest.raises(GenAffectInputError, match="neither"):
        expression_input(None, None, 2)
    with pytest.raises(GenAffectInputError, match="expected 3 expression vectors of 52"):
        expression_input(torch.ones(2, 52), None, 3)


def _tampered(tmp_path, name, config_changes=None, metadata_changes=None, state_change=None):
    """A tiny real adapter file with its metadata or weights changed."""
    from safetensors.torch import save_file

    adapter = tiny_adapter(tiny_flux())
    config = {**json.loads(adapter.config.metadata()["config"]), **(config_changes or {})}
    metadata = {**adapter.config.metadata(), "config": json.dumps(config), **(metadata_changes or {})}
    state = {k: v.contiguous() for k, v in adapter.state_dict().items()}
    if state_change:
        state_change(state)
    path = str(tmp_path / f"{name}.safetensors")
    save_file(state, path, metadata=metadata)
    return path


def _nan(state):
    state["after_double.0.to_out.weight"][0, 0] = float("nan")


def _int8(state):
    for key in state:
        state[key] = state[key].to(torch.int8)


def _wider_queries(state):
    state["encoder.identity.queries"] = torch.zeros(1, 4, 64)


BAD_ADAPTER_FILES = {  # name: (changes, what the message must say)
    "allocation_bomb_tokens": (dict(config_changes={"identity_tokens": 10 ** 9}),
                               r"encoder.identity.queries has shape \[1, 4, 32\], but the metadata describes \[1, 1000000000, 32\]"),
    "allocation_bomb_blocks": (dict(config_changes={"double_blocks": 10 ** 9}), "describes 500000000 double blocks patched"),
    "bomb_width": (dict(config_changes={"token_width": 10 ** 9}), "describes sizes no weight can have"),
    "malformed_json": (dict(metadata_changes={"config": "{not json"}), "config is not valid JSON"),
    "config_not_object": (dict(metadata_changes={"config": "[1, 2]"}), "config is a list, not an object"),
    "missing_field": (dict(metadata_changes={"config": json.dumps({"family": "flux"})}), "config.hidden_size is missing"),
    "text_for_number": (dict(config_changes={"hidden_size": "32"}), "config.hidden_size is '32'"),
    "bool_for_number": (dict(config_changes={"heads": True}), "config.heads is True"),
    "negative_heads": (dict(config_changes={"heads": -2}), "config.heads is -2"),
    "float_tokens": (dict(config_changes={"identity_tokens": 4.5}), "config.identity_tokens is 4.5"),
    "version_not_a_number": (dict(metadata_changes={"format_version": "one"}), "format_version is 'one'"),
    "newer_version": (dict(metadata_changes={"format_version": "99"}), "format 99; this GenAffect reads up to 1"),
    "unknown_family": (dict(config_changes={"family": "sdxl_turbo_9000"}), "sdxl_turbo_9000"),
    "nan_weight": (dict(state_change=_nan), "after_double.0.to_out.weight holds NaN"),
    "int8_weights": (dict(state_change=_int8), r"stores its weights as \['I8'\]"),
    "shape_mismatch": (dict(state_change=_wider_queries), "encoder.identity.queries has shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_ADAPTER_FILES))
def test_a_damaged_adapter_file_is_refused_naming_the_file_and_field_before_allocating(tmp_path, case):
    import resource

    changes, message = BAD_ADAPTER_FILES[case]
    path = _tampered(tmp_path, case, **changes)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelFileError, match=message) as refused:
        load_dit_adapter(path)
    assert path in str(refused.value)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200  # the 10**9 sizes would need gigabytes: nothing was allocated from them


def test_the_dit_nodes_feed_presets_in_the_estimators_space_and_estimated_expressions_as_they_are():
    adapter = DiTAdapter(DiTAdapterConfig(family="flux", hidden_size=32, double_blocks=2, single_blocks=4,
                                          token_width=32, heads=2, head_dim=8, resampler_depth=1))
    identity = Identity(references=[], embedding=np.full(512, 512 ** -0.5, np.float32))
    sheet = presets(["happy", "sad"])  # recipes in .blendshapes, what MediaPipe reads in .estimator_blendshapes
    assert not np.allclose(sheet.blendshapes, sheet.estimator_blendshapes)
    _, rows = dit_nodes.adapter_conditions(adapter, identity, sheet)
    assert torch.equal(rows, adapter_expression_input(adapter.config, torch.from_numpy(sheet.estimator_blendshapes),
                                                      None, 2))
    photo = ExpressionBatch(["photo"], blendshapes=np.full((1, 52), 0.2, np.float32))  # estimated: as it is
    _, rows = dit_nodes.adapter_conditions(adapter, identity, photo)
    assert torch.equal(rows, adapter_expression_input(adapter.config, torch.from_numpy(photo.blendshapes), None, 1))
