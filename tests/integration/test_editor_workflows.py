"""The instruction-editor example workflows inside a real ComfyUI, sent through /prompt after comfy-cli's
UI-to-API conversion: one photo -> a sheet on Qwen-Image-Edit-2511 and on FLUX.2 [klein], and the PixelSmile
transition, on tiny random models loaded by ComfyUI's own loaders. Qwen-Image's 7B text encoder has no tiny
form (ComfyUI builds it at full size), so its encode nodes are swapped for a stand-in with the same inputs
(stand_in_text_encoder/); FLUX.2 reads the tiny CLIP-L."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from sampling_runs import CLIP, run_ok, saved_latent
from tiny_insightface import faces_image

QWEN = {"UNETLoader": {"unet_name": "tiny_qwen_image_edit.safetensors"},
        "VAELoader": {"vae_name": "tiny_qwen_image_vae.safetensors"},
        "LoraLoaderModelOnly": {"lora_name": "PixelSmile-tiny.safetensors"}}
FLUX2 = {"UNETLoader": {"unet_name": "tiny_flux2_klein.safetensors"},
         "VAELoader": {"vae_name": "tiny_flux2_vae.safetensors"}}
SIZE = {"ImageScaleToTotalPixels": {"megapixels": 0.0156}}  # 128 x 128: 16 x 16 Qwen latents, 8 x 8 FLUX.2


def by_type(prompt: dict, kind: str) -> list[tuple[str, dict]]:
    return [(key, node) for key, node in prompt.items() if node["class_type"] == kind]


def tiny(comfy, workflow: str, models: dict, *, names: str | None = None, steps: int = 2) -> dict:
    """The workflow in API format with the tiny models, small images and few steps; without a real
    MediaPipe model Face Metrics measures identity only."""
    prompt = comfy.workflow_prompt(workflow)
    for kind, inputs in {**models, **SIZE}.items():
        for _, node in by_type(prompt, kind):
            node["inputs"].update(inputs)
    for _, node in by_type(prompt, "LoadImage"):
        node["inputs"]["image"] = "example.png"
    for key, node in by_type(prompt, "CLIPLoader"):
        if models is QWEN:  # the stand-in reads no CLIP
            del prompt[key]
        else:
            prompt[key] = copy.deepcopy(CLIP)
    for _, node in by_type(prompt, "TextEncodeQwenImageEditPlus"):
        node["class_type"] = "TinyQwenEditEncode"
        node["inputs"].pop("clip")
    for key, node in by_type(prompt, "GenAffectExpressionEstimatorLoader"):
        del prompt[key]
    for _, node in by_type(prompt, "GenAffectFaceMetrics"):
        node["inputs"].pop("estimator", None)
        node["inputs"].pop("target_expression", None)
    for _, node in by_type(prompt, "GenAffectConsistentBatchSampler"):
        node["inputs"]["steps"] = steps
    if names is not None:
        for _, node in by_type(prompt, "GenAffectExpressionPreset"):
            if node["inputs"]["expressions"] != "neutral":
                node["inputs"]["expressions"] = names
    return prompt


def with_outputs(prompt: dict, name: str) -> dict:
    """The graph plus the sampler's latents saved as ``latents/<name>``."""
    (sampler, _), = by_type(prompt, "GenAffectConsistentBatchSampler")
    prompt[f"{name}_latents"] = {"class_type": "SaveLatent",
                                 "inputs": {"samples": [sampler, 0], "filename_prefix": f"latents/editor_{name}"}}
    return prompt


@pytest.mark.parametrize("workflow, models", [("qwen_edit_expression_sheet", QWEN),
                                              ("flux2_klein_expression_sheet", FLUX2)], ids=["qwen", "flux2"])
def test_editor_sheet_workflow_runs_one_image_per_expression_with_the_photo_in_every_image(editor_models, workflow,
                                                                                         models):
    comfy = editor_models
    names = "happy, sad, surprised"
    prompt = with_outputs(tiny(comfy, workflow, models, names=names), f"{workflow}_photo")
    result = run_ok(comfy, prompt, timeout=600)
    sheets = [image for output in result["outputs"].values() for image in output.get("images", [])
              if image["filename"].startswith("genaffect_")]
    assert len(sheets) == 1
    alphas = [text for output in result["outputs"].values() for text in output.get("text", [])
              if "happy 1.000" in text]
    assert alphas, result["outputs"]  # each image gets its target exactly at intensity 1
    with_photo = saved_latent(comfy, "editor", f"{workflow}_photo")
    assert with_photo.shape[0] == 3 and torch.isfinite(with_photo).all()
    # another photo changes every image of the set: the reference reaches each of them
    Image.fromarray(faces_image(dict(cx=120, cy=136, half=48, identity=2))).save(comfy.work / "input" / "other.png")
    other = with_outputs(tiny(comfy, workflow, models, names=names), f"{workflow}_other")
    for _, node in by_type(other, "LoadImage"):
        node["inputs"]["image"] = "other.png"
    run_ok(comfy, other, timeout=600)
    with_other = saved_latent(comfy, "editor", f"{workflow}_other")
    diffs = [float((with_other[i] - with_photo[i]).abs().max()) for i in range(3)]
    assert all(d > 1e-6 for d in diffs), diffs  # measured ~2e-5 on Qwen: the tiny random weights are small


def test_qwen_sheet_at_intensity_zero_and_rate_zero_is_ksampler_on_the_neutral_edit(editor_models):
    comfy = editor_models
    prompt = with_outputs(tiny(comfy, "qwen_edit_expression_sheet", QWEN, names="happy, sad, surprised"), "alpha0")
    (_, intensity), = by_type(prompt, "GenAffectConditioningIntensity")
    prompt[intensity["inputs"]["expression"][0]]["inputs"]["intensity"] = 0.0  # what each image shows: neutral
    (_, sampler), = by_type(prompt, "GenAffectConsistentBatchSampler")
    sampler["inputs"]["rate"] = 0.0
    run_ok(comfy, prompt, timeout=600)
    ours = saved_latent(comfy, "editor", "alpha0")
    # the same graph's neutral edit through ComfyUI's KSampler, its one latent repeated to the set
    inputs = sampler["inputs"]
    prompt["repeat"] = {"class_type": "RepeatLatentBatch", "inputs": {"samples": inputs["latent_image"], "amount": 3}}
    prompt["ksampler"] = {"class_type": "KSampler", "inputs": {
        "model": inputs["model"], "positive": intensity["inputs"]["neutral"], "negative": inputs["negative"],
        "latent_image": ["repeat", 0], "seed": inputs["seed"], "steps": inputs["steps"], "cfg": inputs["cfg"],
        "sampler_name": inputs["sampler_name"], "scheduler": inputs["scheduler"], "denoise": inputs["denoise"]}}
    prompt["ksampler_latents"] = {"class_type": "SaveLatent", "inputs": {"samples": ["ksampler", 0],
                                                                         "filename_prefix": "latents/editor_ksampler"}}
    run_ok(comfy, prompt, timeout=600)
    assert torch.equal(ours, saved_latent(comfy, "editor", "ksampler"))


def test_pixelsmile_transition_workflow_saves_twelve_frames_and_a_sprite_sheet_with_eased_alphas(editor_models):
    comfy = editor_models
    prompt = with_outputs(tiny(comfy, "pixelsmile_transition", QWEN), "transition")
    result = run_ok(comfy, prompt, timeout=900)
    assert saved_latent(comfy, "editor", "transition").shape[0] == 12
    outputs = list(result["outputs"].values())
    files = {image["filename"]: image for output in outputs for image in output.get("images", [])}
    assert any(name.startswith("genaffect_transition_") and name.endswith(".webp") for name in files)
    assert any(output.get("animated") == [True] for output in outputs)
    sheet = next(name for name in files if name.startswith("genaffect_transition_sheet"))
    with Image.open(comfy.work / "output" / files[sheet]["subfolder"] / sheet) as image:
        assert image.width >= 6 * 128 and image.height >= 2 * 128  # 6 columns x 2 rows of 128 px frames
    text = next(t for output in outputs for t in output.get("text", []) if "happy" in t)
    alphas = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()]
    assert alphas[0] == 0.0 and alphas[-1] == 1.0 and alphas == sorted(alphas) and len(alphas) == 12
    assert abs(alphas[1] - alphas[0]) < abs(alphas[6] - alphas[5])  # eased in: slow start


def test_the_warp_guide_reaches_qwen_edit_as_image_2_and_another_expression_changes_the_edit(editor_models):
    """warp_guide_qwen_edit.json: the Editor's expression warps the photo (the real landmarker finds its face), the
    warped photo is image 2 of the edit, and the edit follows it."""
    from comfy_server import HAS_REAL_LANDMARKER

    if not HAS_REAL_LANDMARKER:
        pytest.skip("Warp Expression reads the photo's face: set GENAFFECT_TEST_MODELS (mediapipe/face_landmarker.task)")
    comfy = editor_models

    def prompt_with(smile: float, name: str) -> dict:
        prompt = comfy.workflow_prompt("warp_guide_qwen_edit")
        for kind, inputs in {**QWEN, "ImageScaleToTotalPixels": {"megapixels": 0.0625}}.items():  # 256 px: a face
            for _, node in by_type(prompt, kind):                                                # MediaPipe finds
                node["inputs"].update(inputs)
        for _, node in by_type(prompt, "LoadImage"):
            node["inputs"]["image"] = "astronaut.png"
        for key, _ in by_type(prompt, "CLIPLoader"):
            del prompt[key]
        for _, node in by_type(prompt, "TextEncodeQwenImageEditPlus"):
            node["class_type"] = "TinyQwenEditEncode"
            node["inputs"].pop("clip")
        (_, editor), = by_type(prompt, "GenAffectExpressionEditor")
        editor["inputs"].update(smile_left=smile, smile_right=smile)
        (sampler, node), = by_type(prompt, "KSampler")
        node["inputs"]["steps"] = 2
        prompt[f"{name}_latents"] = {"class_type": "SaveLatent",
                                     "inputs": {"samples": [sampler, 0], "filename_prefix": f"latents/editor_{name}"}}
        return prompt

    result = run_ok(comfy, prompt_with(0.7, "warp_smile"), timeout=900)
    images = [image for output in result["outputs"].values() for image in output.get("images", [])]
    assert any(image["filename"].startswith("genaffect_warp_guide_qwen_edit") for image in images)
    assert len(images) == 2  # the guide and the edit
    run_ok(comfy, prompt_with(0.0, "warp_still"), timeout=900)
    smiling, still = saved_latent(comfy, "editor", "warp_smile"), saved_latent(comfy, "editor", "warp_still")
    assert torch.isfinite(smiling).all() and float((smiling - still).abs().max()) > 1e-6
