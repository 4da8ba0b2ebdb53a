"""Consistent attention inside a real ComfyUI, on tiny randomly initialised SD1.5 and FLUX models
loaded by ComfyUI's own loaders: rate 0 is exactly the unpatched model, rate 0.5 changes the set,
the input MODEL is left untouched, and the FLUX example workflow runs."""

from __future__ import annotations

import json

import pytest
import torch
from sampling_runs import CLIP, MODELS, run_ok, saved_latent


def sampling_graph(kind: str, branches: dict[str, float | None], sampler: str = "KSampler", images: int = 3) -> dict:
    """One loader, prompts and a batch of 3 latents; per branch an optional consistent-attention patch
    (its rate), a sampler and a SaveLatent named after the branch."""
    model_file, latent = MODELS[kind]
    prompt = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": model_file, "weight_dtype": "default"}},
        "clip": CLIP,
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a face", "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "latent": {"class_type": latent, "inputs": {"width": 64, "height": 64, "batch_size": images}},
    }
    for name, rate in branches.items():
        model = ["unet", 0]
        if rate is not None:
            prompt[f"{name}_patch"] = {"class_type": "GenAffectConsistentAttention", "inputs": {
                "model": model, "rate": rate, "anchors": 0, "start_percent": 0.0, "end_percent": 1.0,
                "blocks": "up", "seed": 7}}
            model = [f"{name}_patch", 0]
        common = {"model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0]}
        if sampler == "KSampler":
            inputs = {**common, "seed": 5, "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal",
                      "denoise": 1.0}
        else:  # the same sampling through KSamplerAdvanced, so ComfyUI's cache cannot answer for it
            inputs = {**common, "add_noise": "enable", "noise_seed": 5, "steps": 2, "cfg": 2.0, "sampler_name": "euler",
                      "scheduler": "normal", "start_at_step": 0, "end_at_step": 10000,
                      "return_with_leftover_noise": "disable"}
        prompt[f"{name}_sample"] = {"class_type": sampler, "inputs": inputs}
        prompt[f"{name}_save"] = {"class_type": "SaveLatent", "inputs": {
            "samples": [f"{name}_sample", 0], "filename_prefix": f"latents/{kind}_{name}"}}
    return prompt


@pytest.mark.parametrize("kind", list(MODELS))
def test_rate_zero_is_exactly_the_unpatched_model_and_sharing_changes_the_set(tiny_diffusion, kind):
    comfy = tiny_diffusion
    run_ok(comfy, sampling_graph(kind, {"plain": None, "rate0": 0.0, "rate05": 0.5}))
    plain, off, shared = (saved_latent(comfy, kind, name) for name in ("plain", "rate0", "rate05"))
    assert plain.shape[0] == 3 and torch.isfinite(plain).all()
    assert torch.equal(off, plain)
    assert (shared - plain).abs().max() > 1e-4
    # Later, the cached unpatched MODEL sampled again gives the same set: the patch did not touch it.
    run_ok(comfy, sampling_graph(kind, {"again": None}, sampler="KSamplerAdvanced"))
    assert torch.equal(saved_latent(comfy, kind, "again"), plain)


def test_a_set_of_one_image_is_exactly_the_unpatched_model_whatever_the_rate(tiny_diffusion):
    comfy = tiny_diffusion
    run_ok(comfy, sampling_graph("flux", {"single": None, "single_shared": 1.0}, images=1))
    assert torch.equal(saved_latent(comfy, "flux", "single_shared"), saved_latent(comfy, "flux", "single"))


def test_the_flux_example_workflow_runs_with_one_prompt_per_expression(tiny_diffusion):
    comfy = tiny_diffusion
    prompt = comfy.workflow_prompt("flux_expression_sheet_consistent")
    by_type = {node["class_type"]: (key, node) for key, node in prompt.items()}
    by_type["UNETLoader"][1]["inputs"]["unet_name"] = MODELS["flux"][0]
    by_type["VAELoader"][1]["inputs"]["vae_name"] = "flux_vae_random.safetensors"
    # The tiny FLUX reads 768-wide text, so the CLIP-L alone conditions it (a random T5-XXL would be 19 GB).
    prompt[by_type["DualCLIPLoader"][0]] = CLIP
    by_type["EmptySD3LatentImage"][1]["inputs"].update(width=64, height=64)
    by_type["GenAffectExpressionPreset"][1]["inputs"]["expressions"] = "happy, sad, surprised"
    by_type["GenAffectConsistentBatchSampler"][1]["inputs"]["steps"] = 2
    result = run_ok(comfy, prompt)
    images = [image for output in result["outputs"].values() for image in output.get("images", [])]
    assert len(images) == 1 and images[0]["filename"].startswith("genaffect_flux_sheet")
    log = comfy.log()
    assert "Traceback" not in log.split("got prompt")[-1], log[-3000:]


def test_the_batch_sampler_repeats_one_latent_per_prompt_and_refuses_a_count_mismatch(tiny_diffusion):
    comfy = tiny_diffusion
    prompt = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": MODELS["sd15"][0], "weight_dtype": "default"}},
        "clip": CLIP,
        "preset": {"class_type": "GenAffectExpressionPreset", "inputs": {"expressions": "happy, sad", "intensity": 1.0}},
        "words": {"class_type": "GenAffectExpressionToPrompt", "inputs": {
            "expression": ["preset", 0], "prefix": "a face,", "suffix": ""}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": ["words", 0], "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "GenAffectConsistentBatchSampler", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": 3, "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "rate": 0.5, "anchors": 1, "start_percent": 0.0, "end_percent": 1.0, "blocks": "up"}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "latents/sd15_batch"}},
    }
    run_ok(comfy, prompt)
    assert saved_latent(comfy, "sd15", "batch").shape == (2, 4, 8, 8)
    prompt["latent"]["inputs"]["batch_size"] = 3
    result = comfy.run(prompt, timeout=300)
    messages = [m[1]["exception_message"] for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert messages and "2 positive conditionings for 3 images" in messages[0], json.dumps(result["status"])[-2000:]


def test_cancel_stops_a_consistent_batch_run_within_a_step_and_the_next_run_equals_a_fresh_one(tiny_diffusion):
    import time

    comfy = tiny_diffusion

    def graph(steps: int, name: str) -> dict:
        prompt = sampling_graph("sd15", {name: None})
        del prompt[f"{name}_sample"]
        prompt[f"{name}_sample"] = {"class_type": "GenAffectConsistentBatchSampler", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": 11, "steps": steps, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "rate": 0.5, "anchors": 0, "start_percent": 0.0, "end_percent": 1.0, "blocks": "up"}}
        return prompt

    started = time.time()
    run_ok(comfy, graph(4, "cancel_fresh"))
    fresh = saved_latent(comfy, "sd15", "cancel_fresh")
    per_step = (time.time() - started) / 4  # an upper bound: loading and saving are counted too
    status, answer = comfy.post("/prompt", {"prompt": graph(2000, "cancel_long")})
    assert status == 200, answer
    prompt_id = answer["prompt_id"]
    deadline = time.time() + 120
    while "/2000" not in comfy.log().split("got prompt")[-1] and time.time() < deadline:  # the sampler's progress bar
        time.sleep(0.2)
    comfy.post("/interrupt", {})
    pressed = time.time()
    while time.time() < deadline:
        history = comfy.get(f"/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            break
        time.sleep(0.1)
    stopped_after = time.time() - pressed
    messages = [m[0] for m in history[prompt_id]["status"]["messages"]]
    print(f"Cancel: stopped {stopped_after:.2f} s after the press; a step takes at most {per_step:.2f} s")
    assert "execution_interrupted" in messages, messages
    assert stopped_after < 2 * per_step + 2.0, (stopped_after, per_step)  # within a step (and the poll)
    run_ok(comfy, graph(4, "cancel_again"))  # nothing of the cancelled run is left patched
    assert torch.equal(saved_latent(comfy, "sd15", "cancel_again"), fresh)
