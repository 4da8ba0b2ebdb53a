"""The Gen-AFFECT DiT adapter inside ComfyUI: ComfyUI's FLUX patched by the pack matches diffusers' FLUX with
the trainer's adapter hooks on the same weights and inputs, and the FLUX + adapter example workflow runs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from comfy_server import COMFYUI_DIR, COMFYUI_PYTHON
from sampling_runs import adapter_workflow, run_ok, saved_latent, write_adapter_for_tiny_flux

TOLERANCE = 1e-5  # max abs difference of one fp32 forward on CPU (outputs reach ~2.5; measured 7e-7)


def test_comfyui_patched_flux_matches_diffusers_flux_with_the_same_adapter_hooks(comfy, tmp_path):
    pytest.importorskip("diffusers", reason="the parity test needs diffusers in ComfyUI's Python (CONTRIBUTING.md)")
    script = os.path.join(os.path.dirname(__file__), "dit_parity.py")
    done = subprocess.run([COMFYUI_PYTHON, script, str(tmp_path)], cwd=COMFYUI_DIR, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["patched_blocks"] == ["('double_block', 0)", "('single_block', 0)"]
    assert result["plain_max_abs"] < TOLERANCE  # the same transformer in both
    assert result["adapter_max_abs"] < TOLERANCE, result
    assert result["adapter_effect"] > 1e-2  # and the adapter changes the output


def test_the_flux_adapter_example_workflow_runs_and_strength_zero_is_the_plain_set(tiny_diffusion):
    comfy = tiny_diffusion
    write_adapter_for_tiny_flux(comfy)
    result = run_ok(comfy, adapter_workflow(comfy))
    images = [image for output in result["outputs"].values() for image in output.get("images", [])]
    assert len(images) == 1 and images[0]["filename"].startswith("genaffect_flux_adapter_sheet")
    log = comfy.log()
    assert "Traceback" not in log.split("got prompt")[-1], log[-3000:]

    def sampled(name: str, **settings) -> torch.Tensor:
        prompt = adapter_workflow(comfy, **settings)
        sampler = next(key for key, node in prompt.items() if node["class_type"] == "GenAffectDiTSampler")
        prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0],
                                                                 "filename_prefix": f"latents/dit_{name}"}}
        if name == "ksampler":  # the same set from plain FLUX: Flux Guidance + KSampler on a batch of 3
            inputs = prompt[sampler]["inputs"]
            prompt["guided"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": inputs["positive"],
                                                                         "guidance": inputs["guidance"]}}
            prompt["latent3"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64,
                                                                                 "batch_size": 3}}
            prompt["plain"] = {"class_type": "KSampler", "inputs": {
                "model": inputs["model"], "positive": ["guided", 0], "negative": inputs["negative"],
                "latent_image": ["latent3", 0], "seed": inputs["seed"], "steps": 2, "cfg": inputs["cfg"],
                "sampler_name": inputs["sampler_name"], "scheduler": inputs["scheduler"], "denoise": 1.0}}
            prompt["save"]["inputs"]["samples"] = ["plain", 0]
        run_ok(comfy, prompt)
        return saved_latent(comfy, "dit", name)

    plain = sampled("ksampler")
    off = sampled("off", identity_strength=0.0, expression_strength=0.0, rate=0.0)
    on = sampled("on", identity_strength=1.0, expression_strength=1.0, rate=0.0)
    assert off.shape == (3, 16, 8, 8) and torch.equal(off, plain)
    assert (on - plain).abs().max() > 1e-4
    # Unloading frees the adapters with their models: ComfyUI's leak check finds nothing alive.
    status, _ = comfy.post("/free", {"unload_models": True, "free_memory": True})
    assert status == 200
    sampled("after_free", identity_strength=1.0, expression_strength=1.0, rate=0.0)
    assert "memory leak with model" not in comfy.log(), [line for line in comfy.log().splitlines() if "leak" in line]
