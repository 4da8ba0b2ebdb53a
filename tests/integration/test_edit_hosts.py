"""Instruction-editor families inside ComfyUI (Qwen-Image and its Edit models, FLUX.2, FLUX.1 Kontext):
ComfyUI's detection names each tiny model's family; with a reference latent in the conditioning,
consistent attention at rate 0 is exactly the unpatched model, rate 0.5 changes the set, the reference
tokens leave the first block exactly as in the plain run, and the input MODEL samples as before; the DiT
adapter is an exact no-op at strength 0, changes the set at 1 and leaves the reference tokens alone; and
ComfyUI's Qwen-Image with the adapter matches diffusers' Qwen-Image with the trainer's hooks; a LoRA in
PixelSmile's layout is fully applied by ComfyUI's own loader; padded, masked per-image prompts give each image
what its prompt alone gives."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from comfy_server import COMFYUI_DIR, COMFYUI_PYTHON

TOLERANCE = 1e-5  # one fp32 forward on CPU, outputs up to ~4 (measured 1.7e-6)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if not COMFYUI_DIR:
        pytest.skip("set COMFYUI_DIR to a ComfyUI checkout to run the integration tests (see CONTRIBUTING.md)")
    pytest.importorskip("diffusers", reason="the Qwen-Image parity needs diffusers in ComfyUI's Python (CONTRIBUTING.md)")
    script = os.path.join(os.path.dirname(__file__), "edit_hosts.py")
    done = subprocess.run([COMFYUI_PYTHON, script, str(tmp_path_factory.mktemp("edit_hosts"))], cwd=COMFYUI_DIR,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", ["qwen_image", "flux2", "flux"])
def test_consistent_attention_on_an_edit_shares_generated_tokens_and_leaves_the_reference_alone(results, family):
    found = results[family]
    assert found["detected"] == family and found["family"] == family  # ComfyUI's detection, our registry
    assert found["block_tokens"] == sum(found["tokens"])  # the reference latent reached the transformer
    assert found["rate0_equal"] and found["input_model_unchanged"] and found["finite"]
    assert found["rate05_change"] > 1e-5
    assert found["reference_tokens_max_abs"] == 0.0 and found["generated_tokens_change"] > 1e-5


@pytest.mark.parametrize("family", ["qwen_image", "flux2", "flux"])
def test_dit_adapter_on_each_editor_family_acts_on_generated_tokens_only(results, family):
    found = results[family]
    assert found["adapter_sizes"]["family"] == family and found["adapter_patched_blocks"] >= 1
    assert found["adapter_zero_equal"] and found["adapter_change"] > 1e-3
    assert found["adapter_reference_tokens_max_abs"] == 0.0


def test_comfyui_qwen_image_with_the_adapter_matches_diffusers_with_the_trainers_hooks(results):
    parity = results["qwen_parity"]
    assert parity["missing_keys"] == 0 and parity["unexpected_keys"] == 0  # ComfyUI's Qwen keys are diffusers'
    assert parity["plain_max_abs"] < TOLERANCE
    assert parity["adapter_max_abs"] < TOLERANCE, parity
    assert parity["adapter_effect"] > 1e-2


def test_a_lora_in_pixelsmiles_layout_patches_every_module_through_comfyuis_own_loader(results):
    """PixelSmile's LoRA needs no mapping of ours: ComfyUI maps its diffusers keys onto Qwen-Image, all 12 modules,
    and moves each weight by strength x B @ A (no alpha in the file): strength 2 is the update PixelSmile trained
    with alpha / rank = 2 (docs/pixelsmile-lora.md)."""
    lora = results["pixelsmile_lora"]
    assert lora["patched"] == lora["modules"] == 12 and lora["unpatched_model_untouched"]
    assert lora["scales"] == [[1.0, 1.0], [2.0, 2.0]]


def test_prompts_of_different_lengths_on_qwen_image_are_padded_and_masked_so_each_image_is_as_alone(results):
    padded = results["qwen_padded_prompts"]
    assert padded["mask"] == [[1] * 5 + [0] * 4, [1] * 9]
    assert padded["padded_vs_alone_max_abs"] < 1e-4, padded  # measured 7.5e-6: batching reorders float sums
    assert padded["rate0_equal"] and padded["shared_finite"] and padded["shared_change"] > 1e-5
