"""The Gen-AFFECT DiT adapter: an exact no-op untrained or at strength 0 on tiny FLUX and SD3, placed
after PuLID-FLUX's blocks, saved with metadata that is checked against the backbone."""

from __future__ import annotations

import pytest
import torch

from genaffect.models.dit_adapter import (
    DiTAdapter, DiTAdapterConfig, check_backbone, expression_input, load_dit_adapter,
)
from genaffect.models.errors import GenAffectInputError, ModelFileError

from genaffect.models.backbones import diffusers_sizes
from genaffect.training.diffusers_host import DiffusersHost

from tiny_dit import as_trained, run, tiny_flux, tiny_sd3

pytest.importorskip("diffusers")
BACKBONES = {"flux": tiny_flux, "sd3": tiny_sd3}


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


@pytest.mark.parametrize("family", list(BACKBONES))
def test_untrained_adapter_and_strength_zero_leave_the_output_bit_identical(family):
    model = BACKBONES[family]()
    plain = run(model)
    adapter = tiny_adapter(model)
    identity_tokens, expression_tokens = tokens_for(adapter)
    host = DiffusersHost(model, adapter)
    host.condition(identity_tokens, expression_tokens)
    assert torch.equal(run(model), plain)  # zero-initialised output projections
    as_trained(adapter)
    host.condition(identity_tokens, expression_tokens, 0.0, 0.0)
    assert torch.equal(run(model), plain)
    host.condition(identity_tokens, expression_tokens, 1.0, 0.0)
    with_identity = run(model)
    host.condition(identity_tokens, expression_tokens, 1.0, 1.0)
    with_both = run(model)
    host.remove()
    assert torch.equal(run(model), plain)
    assert (with_identity - plain).abs().max() > 1e-4 and (with_both - with_identity).abs().max() > 1e-4


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
    with pytest.raises(ModelFileError, match="missing"):
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
