"""The backbone registry: every family is recognised from ComfyUI's class (and its image_model where one
class serves two families) and from diffusers' class; unknown and unhostable families are refused by
name; an adapter is refused on another family with both names."""

from __future__ import annotations

import pytest
import torch
from genaffect.models.errors import GenAffectInputError, ModelFileError
from genaffect.models.generation import backbones
from genaffect.models.generation.backbones import BACKBONES, FAMILIES, TokenLayout, comfy_family, patch_tokens
from genaffect.models.generation.dit_adapter import DiTAdapter, DiTAdapterConfig, check_backbone, load_dit_adapter

FLUX_CLASS = "comfy.ldm.flux.model.Flux"


def test_each_family_is_found_from_comfyui_class_and_detected_image_model():
    for backbone in BACKBONES:
        for path in backbone.comfy_classes:
            assert comfy_family(["my.Subclass", path, "torch.nn.Module"], backbone.comfy_image_model) is backbone
    assert comfy_family([FLUX_CLASS], "flux2").name == "flux2"  # FLUX.2 runs ComfyUI's Flux class
    assert comfy_family([FLUX_CLASS], "flux").name == "flux"


def test_a_family_the_registry_does_not_know_is_refused_with_the_supported_list():
    with pytest.raises(GenAffectInputError, match=r"WanModel \(wan2.1\).*does not know.*FLUX.2.*Qwen-Image"):
        comfy_family(["comfy.ldm.wan.model.WanModel", "torch.nn.Module"], "wan2.1")
    with pytest.raises(GenAffectInputError, match="hunyuan"):  # the Flux class with an image_model no record has
        comfy_family([FLUX_CLASS], "hunyuan")
    with pytest.raises(GenAffectInputError, match="'krea2' is not a diffusion family.*flux2, qwen_image"):
        backbones.family("krea2")


def test_families_comfyui_runs_but_genaffect_cannot_host_are_refused_with_the_reason():
    with pytest.raises(GenAffectInputError, match="cannot patch Lumina 2 / Z-Image: it pads and masks"):
        comfy_family(["comfy.ldm.lumina.model.NextDiT"], "lumina2")


def test_diffusers_transformers_are_recognised_by_class_and_others_refused():
    pytest.importorskip("diffusers")
    from tiny_dit import tiny_flux, tiny_flux2, tiny_qwen_image, tiny_sd3

    found = {builder.__name__: backbones.diffusers_sizes(builder()) for builder in
             (tiny_flux, tiny_flux2, tiny_qwen_image, tiny_sd3)}
    assert found["tiny_flux2"] == dict(family="flux2", hidden_size=32, double_blocks=2, single_blocks=4)
    assert found["tiny_qwen_image"] == dict(family="qwen_image", hidden_size=32, double_blocks=4, single_blocks=0)
    assert found["tiny_flux"]["family"] == "flux" and found["tiny_sd3"]["family"] == "sd3"
    with pytest.raises(GenAffectInputError, match="Linear is not a diffusers transformer GenAffect hosts"):
        backbones.diffusers_family(torch.nn.Linear(2, 2))


def test_a_flux_adapter_on_qwen_image_is_refused_naming_both():
    config = DiTAdapterConfig(family="flux", hidden_size=3072, double_blocks=19, single_blocks=38)
    with pytest.raises(GenAffectInputError, match=r"trained for flux = FLUX.1.*this MODEL is qwen_image = Qwen-Image"):
        check_backbone(config, family="qwen_image", hidden_size=3072, double_blocks=60, single_blocks=0)


def test_adapter_configurations_follow_the_family_record():
    with pytest.raises(GenAffectInputError, match="Qwen-Image.*has no single blocks"):
        DiTAdapterConfig(family="qwen_image", hidden_size=32, double_blocks=4, single_blocks=2)
    with pytest.raises(GenAffectInputError, match="not SD1.x / SDXL UNet"):
        DiTAdapterConfig(family="sd_unet", hidden_size=32, double_blocks=4)


def test_an_adapter_file_naming_an_unknown_family_is_refused_naming_the_file(tmp_path):
    adapter = DiTAdapter(DiTAdapterConfig(family="flux", hidden_size=16, double_blocks=1, token_width=16,
                                          identity_tokens=1, expression_tokens=1, heads=1, head_dim=8,
                                          resampler_depth=1))
    path = adapter.save(str(tmp_path / "adapter.safetensors"))
    from safetensors.torch import load_file, save_file

    metadata = adapter.config.metadata()
    metadata["config"] = metadata["config"].replace('"flux"', '"hidream"')
    save_file(load_file(path), path, metadata)
    with pytest.raises(ModelFileError, match=r"adapter.safetensors: 'hidream' is not a diffusion family"):
        load_dit_adapter(path)


def test_token_layouts_and_patch_counts():
    layout = TokenLayout(text=7, generated=16, references=20)
    assert (layout.length, layout.generated_slice, layout.reference_slice) == (43, slice(7, 23), slice(23, 43))
    assert patch_tokens((2, 16, 7, 10), 2) == 4 * 5  # padded up to whole patches
    assert patch_tokens((2, 16, 1, 7, 10), 2) == 20  # Qwen-Image's 5-D latent, one frame
    assert patch_tokens((1, 128, 6, 6), 1) == 36  # FLUX.2: 128 channels, patch 1
    assert set(FAMILIES) >= {"flux", "flux2", "qwen_image", "sd3", "chroma", "sd_unet"}
