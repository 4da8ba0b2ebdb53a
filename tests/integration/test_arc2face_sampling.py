"""Arc2Face inside a real ComfyUI on a full-size, randomly initialised Arc2Face in the published
layout: the native result (our loader, identity conditioning, Expression Adapter and Reference Adapter,
ComfyUI's KSampler) matches a diffusers StableDiffusionPipeline with Arc2Face's identity projection, the
adapter loaded by diffusers' own load_ip_adapter and the reference LoRA by its load_lora_weights, on the
same weights, inputs and seed."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from comfy_server import HAS_REAL_LANDMARKER
from PIL import Image
from sampling_runs import run_ok, saved_latent

EXPRESSIONS = "neutral, happy, surprised"
SEED, STEPS, CFG = 5, 2, 3.0
TOLERANCE = 1e-3  # max abs difference of the final latents, fp32 on CPU (this random UNet's latents reach ~60)


def arc2face_graph(prefix: str, weight_dtype: str = "fp32") -> dict:
    return {
        "image": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "analyzer": {"class_type": "GenAffectFaceAnalyzerLoader", "inputs": {
            "pack": "antelopev2", "recognition": "arcface.onnx (Arc2Face)", "provider": "CPU",
            "detection_size": 256, "detection_threshold": 0.5}},
        "identity": {"class_type": "GenAffectExtractIdentity", "inputs": {
            "face_analyzer": ["analyzer", 0], "images": ["image", 0], "face_order": "largest", "face_index": 0,
            "on_no_face": "skip"}},
        "arc2face": {"class_type": "GenAffectArc2FaceLoader", "inputs": {"weight_dtype": weight_dtype}},
        "cond": {"class_type": "GenAffectArc2FaceConditioning", "inputs": {
            "clip": ["arc2face", 1], "identity": ["identity", 0]}},
        "presets": {"class_type": "GenAffectExpressionPreset", "inputs": {"expressions": EXPRESSIONS, "intensity": 1.0}},
        "flame": {"class_type": "GenAffectApplyExpressionMapping", "inputs": {
            "expression": ["presets", 0], "mapping_file": "mappings/test_map.safetensors", "replace_existing": False}},
        "adapter": {"class_type": "GenAffectApplyExpressionAdapter", "inputs": {
            "model": ["arc2face", 0], "expression_adapter": ["arc2face", 2], "expression": ["flame", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 3}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["adapter", 0], "positive": ["cond", 0], "negative": ["cond", 1], "latent_image": ["latent", 0],
            "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": f"latents/{prefix}"}},
    }


REFERENCE_SIZE, LORA_STRENGTH = 64, 0.8


def reference_graph(prefix: str) -> dict:
    """The parity graph plus the Reference Adapter on the aligned identity photo."""
    prompt = arc2face_graph(prefix)
    prompt.update({
        "align": {"class_type": "GenAffectAlignFace", "inputs": {
            "face_analyzer": ["analyzer", 0], "images": ["image", 0], "size": REFERENCE_SIZE, "face_order": "largest",
            "face_index": 0, "on_no_face": "error"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "sd15_vae_random.safetensors"}},
        "reference": {"class_type": "GenAffectApplyReferenceAdapter", "inputs": {
            "model": ["adapter", 0], "reference_adapter": ["arc2face", 3], "vae": ["vae", 0],
            "positive": ["cond", 0], "photo": ["align", 0], "lora_strength": LORA_STRENGTH}},
    })
    prompt["sample"]["inputs"]["model"] = ["reference", 0]
    return prompt


def reference_inputs(comfy):
    """The identity embedding, FLAME vectors and aligned photo, computed by the pack's own code outside ComfyUI."""
    from genaffect.models.expression import expression_library, expression_mapping
    from genaffect.models.face import face_align, face_analyzer, identity
    from genaffect.models.files import onnx_providers

    analyzer = face_analyzer.load_face_analyzer(
        "antelopev2", str(comfy.models / "insightface" / "models" / "antelopev2"),
        onnx_providers.choose_providers("CPU"), use_arc2face_recognizer=True,
        arc2face_roots=[str(comfy.models / "arc2face")], det_size=256, det_threshold=0.5)
    frame = np.asarray(Image.open(comfy.work / "input" / "example.png").convert("RGB"))
    found, _ = identity.extract_identity(analyzer, [frame])
    mapping = expression_mapping.load_mapping(str(comfy.models / "genaffect" / "mappings" / "test_map.safetensors"))
    names = [n.strip() for n in EXPRESSIONS.split(",")]
    flame = mapping.apply(expression_library.presets(names).blendshapes)
    aligned, _ = face_align.align_photos(analyzer, [frame], size=REFERENCE_SIZE)
    return torch.from_numpy(found.embedding).float()[None], torch.from_numpy(flame).float(), aligned[0]


def bank_reference_photo(pipe, comfy, photo: np.ndarray, prompt_embeds: torch.Tensor) -> None:
    """Arc2Face's Reference Adapter on the pipeline: the "ref" LoRA on its UNet, and a clean UNet's pass at
    timestep 0 on the photo's latent banked into the pipeline UNet's self-attention (CFG rows: 2)."""
    from arc2face_models import SD15_VAE
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from safetensors.torch import load_file
    from tiny_sd15 import ArcReferenceProcessor

    root = comfy.models / "arc2face"
    pipe.load_lora_weights(str(root / "ref_adapter"), weight_name="pytorch_lora_weights.safetensors", adapter_name="ref")
    pipe.set_adapters("ref", LORA_STRENGTH)
    vae = AutoencoderKL(**SD15_VAE)
    vae.load_state_dict({k: v.float() for k, v in load_file(comfy.models / "vae" / "sd15_vae_random.safetensors").items()})
    pixels = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    writer = UNet2DConditionModel.from_pretrained(str(root / "arc2face"), torch_dtype=torch.float32)
    banks = {name: [] for name in writer.attn_processors if name.endswith("attn1.processor")}
    writer.set_attn_processor({name: ArcReferenceProcessor("write", banks[name]) if name in banks else AttnProcessor2_0()
                               for name in writer.attn_processors})
    with torch.no_grad():
        # the latent's mode: ComfyUI's VAE encode is deterministic (the demo samples the distribution)
        latent = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
        writer(latent.repeat(2, 1, 1, 1), torch.zeros(2).long(), prompt_embeds.repeat(2, 1, 1))
    current = pipe.unet.attn_processors
    pipe.unet.set_attn_processor({name: ArcReferenceProcessor("read", banks[name]) if name in banks else processor
                                  for name, processor in current.items()})


def diffusers_reference(comfy, embedding: torch.Tensor, flame: torch.Tensor, photo=None) -> torch.Tensor:
    """Arc2Face's published inference (gradio_demo/app_exp_adapter.py) on diffusers, Euler sampling;
    with ``photo``, reference-guided."""
    from arc2face_models import SD15_VAE
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = comfy.models / "arc2face"
    unet = UNet2DConditionModel.from_pretrained(str(root / "arc2face"), torch_dtype=torch.float32)
    encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(str(root / "encoder")))
    state = torch.load(root / "encoder" / "pytorch_model.bin", weights_only=True)
    if not any(k.startswith("text_model.") for k in encoder.state_dict()):  # transformers 5 names
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(os.environ["COMFYUI_DIR"], "comfy", "sd1_tokenizer"))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing")  # ComfyUI's "simple" schedule
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**SD15_VAE), text_encoder=encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.load_ip_adapter(str(root), subfolder="exp_adapter", weight_name="exp_adapter.bin", image_encoder_folder=None)
    pipe.set_ip_adapter_scale(1.0)

    # Arc2Face's project_face_embs: the "id" token's input embedding replaced, then the encoder run.
    ids = tokenizer("photo of a id person", padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids
    id_token = tokenizer.encode("id", add_special_tokens=False)[0]
    padded = torch.nn.functional.pad(embedding, (0, 768 - 512))
    hook = encoder.get_input_embeddings().register_forward_hook(
        lambda module, args, out: torch.where((args[0] == id_token)[..., None], padded.to(out.dtype), out))
    with torch.no_grad():
        prompt_embeds = encoder(ids).last_hidden_state
    hook.remove()
    if photo is not None:
        bank_reference_photo(pipe, comfy, photo, prompt_embeds)

    # One expression per pipeline call, as the demo runs it: the pipeline repeats the adapter's embeddings
    # for every image of a batch, so a batch cannot carry different expressions. Images are independent.
    noise = torch.randn((flame.shape[0], 4, 8, 8), generator=torch.manual_seed(SEED))  # ComfyUI's prepare_noise
    # ComfyUI starts from noise x sqrt(1 + sigma_max^2); diffusers' "trailing" Euler from noise x sigma_max.
    scheduler.set_timesteps(STEPS)
    sigma_max = float(scheduler.sigmas[0])
    noise = noise * (1 + sigma_max ** 2) ** 0.5 / sigma_max
    latents = []
    for i in range(flame.shape[0]):
        exp_embeds = torch.cat([torch.zeros_like(flame[i:i + 1]), flame[i:i + 1]])[:, None, :]
        with torch.no_grad():
            latents.append(pipe(prompt_embeds=prompt_embeds, ip_adapter_image_embeds=[exp_embeds],
                                num_inference_steps=STEPS, guidance_scale=CFG, latents=noise[i:i + 1], height=64,
                                width=64, output_type="latent").images)
    return torch.cat(latents)


def test_arc2face_expression_sheet_matches_the_diffusers_reference(arc2face_models):
    comfy = arc2face_models
    run_ok(comfy, arc2face_graph("arc2face_parity"), timeout=600)
    ours = saved_latent(comfy, "arc2face", "parity")
    embedding, flame, _ = reference_inputs(comfy)
    reference = diffusers_reference(comfy, embedding, flame)
    ours_internal = ours * 0.18215  # SaveLatent stores ComfyUI's latent; diffusers returns the model's own scale
    difference = (ours_internal - reference).abs().max().item()
    print(f"Arc2Face parity: max abs difference {difference:.2e} (latents up to {reference.abs().max():.2f})")
    assert ours.shape == (3, 4, 8, 8) and torch.isfinite(ours).all()
    assert difference < TOLERANCE
    assert (ours[0] - ours[1]).abs().max() > 1e-3  # the expressions make the images differ


def test_reference_adapter_matches_arc2face_reference_guided_inference(arc2face_models):
    comfy = arc2face_models
    run_ok(comfy, reference_graph("arc2face_reference"), timeout=600)
    ours = saved_latent(comfy, "arc2face", "reference")
    embedding, flame, photo = reference_inputs(comfy)
    reference = diffusers_reference(comfy, embedding, flame, photo)
    difference = (ours * 0.18215 - reference).abs().max().item()
    print(f"Reference Adapter parity: max abs difference {difference:.2e} (latents up to {reference.abs().max():.2f})")
    assert difference < TOLERANCE
    run_ok(comfy, arc2face_graph("arc2face_noref"), timeout=600)  # sampled already by the parity test, or now
    assert (ours - saved_latent(comfy, "arc2face", "noref")).abs().max() > 1e-3  # the photo and LoRA act


def test_samplercustom_gives_ksampler_result_with_both_adapters(arc2face_models):
    comfy = arc2face_models
    prompt = reference_graph("arc2face_custom")
    prompt["sampler"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["sigmas"] = {"class_type": "BasicScheduler", "inputs": {
        "model": ["reference", 0], "scheduler": "simple", "steps": STEPS, "denoise": 1.0}}
    prompt["sample"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["reference", 0], "add_noise": True, "noise_seed": SEED, "cfg": CFG, "positive": ["cond", 0],
        "negative": ["cond", 1], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]}}
    run_ok(comfy, prompt, timeout=600)
    run_ok(comfy, reference_graph("arc2face_ksampler"), timeout=600)  # cached when the parity test ran
    custom, ksampler = saved_latent(comfy, "arc2face", "custom"), saved_latent(comfy, "arc2face", "ksampler")
    assert (custom - ksampler).abs().max() < 1e-5


def test_consistent_batch_sampler_samples_the_expression_set_with_the_adapter(arc2face_models):
    comfy = arc2face_models
    prompt = arc2face_graph("arc2face_batch_rate0")
    ksampler = prompt["sample"]["inputs"]
    prompt["sample"] = {"class_type": "GenAffectConsistentBatchSampler", "inputs": {
        **{k: ksampler[k] for k in ("model", "positive", "negative", "latent_image", "seed", "steps", "cfg",
                                    "sampler_name", "scheduler", "denoise")},
        "rate": 0.0, "anchors": 0, "start_percent": 0.0, "end_percent": 1.0, "blocks": "up"}}
    run_ok(comfy, prompt, timeout=600)
    prompt["sample"]["inputs"]["rate"] = 0.5
    prompt["save"]["inputs"]["filename_prefix"] = "latents/arc2face_batch_shared"
    run_ok(comfy, prompt, timeout=600)
    run_ok(comfy, arc2face_graph("arc2face_batch_ksampler"), timeout=600)  # cached when the parity test ran
    plain, off, shared = (saved_latent(comfy, "arc2face", name)
                          for name in ("batch_ksampler", "batch_rate0", "batch_shared"))
    assert (off - plain).abs().max() < 1e-5  # rate 0: exactly KSampler with the adapter, expression i on image i
    assert shared.shape == (3, 4, 8, 8) and torch.isfinite(shared).all()
    assert (shared - plain).abs().max() > 1e-3


def _errors(result):
    return [m[1]["exception_message"] for m in result["status"]["messages"] if m[0] == "execution_error"]


@pytest.mark.parametrize("model_file, fragment", [
    ("tiny_sd15.safetensors", "trained for 16 layers"),  # an SD1.5-style UNet whose layers do not match
    ("tiny_flux.safetensors", "this MODEL is FLUX.1 (dev, schnell, Kontext)"),
])
def test_expression_adapter_refuses_a_model_it_was_not_trained_for(arc2face_models, tiny_diffusion, model_file, fragment):
    comfy = arc2face_models
    prompt = arc2face_graph("refused")
    prompt["unet"] = {"class_type": "UNETLoader", "inputs": {"unet_name": model_file, "weight_dtype": "default"}}
    prompt["adapter"]["inputs"]["model"] = ["unet", 0]
    result = comfy.run(prompt)
    assert result["status"]["status_str"] == "error"
    assert any(fragment in message for message in _errors(result)), _errors(result)


def test_latent_batch_that_fits_no_expression_count_stops_with_both_counts(arc2face_models):
    comfy = arc2face_models
    prompt = arc2face_graph("mismatch")
    prompt["latent"]["inputs"]["batch_size"] = 2
    result = comfy.run(prompt)
    assert any("3 expressions for a batch of 2 images" in message for message in _errors(result)), _errors(result)


def test_reference_adapter_and_consistent_attention_refuse_each_other_and_an_unaligned_photo_is_refused(arc2face_models):
    comfy = arc2face_models
    prompt = reference_graph("refused_reference")
    prompt["consistent"] = {"class_type": "GenAffectConsistentAttention", "inputs": {
        "model": ["adapter", 0], "rate": 0.5, "anchors": 0, "start_percent": 0.0, "end_percent": 1.0,
        "blocks": "up", "seed": 7}}
    prompt["reference"]["inputs"]["model"] = ["consistent", 0]
    result = comfy.run(prompt)
    assert any("already replaced by SelfAttentionShare" in message for message in _errors(result)), _errors(result)
    prompt["reference"]["inputs"]["model"] = ["adapter", 0]  # the other order: consistent attention refuses
    prompt["consistent"]["inputs"]["model"] = ["reference", 0]
    prompt["sample"]["inputs"]["model"] = ["consistent", 0]
    result = comfy.run(prompt)
    assert any("replaced by another node (ReferenceSelfAttention)" in message for message in _errors(result)), \
        _errors(result)
    prompt = reference_graph("unaligned_reference")
    prompt["crop"] = {"class_type": "ImageCrop", "inputs": {"image": ["image", 0], "width": 256, "height": 200,
                                                            "x": 0, "y": 0}}
    prompt["reference"]["inputs"]["photo"] = ["crop", 0]
    result = comfy.run(prompt)
    assert any("Pass the photo through GenAffect Align Face" in message for message in _errors(result)), _errors(result)


def small_workflow_prompt(comfy, name: str) -> dict:
    """workflows/<name>.json as API prompt, made small for the CPU: painted faces for the tiny detector, a
    real face for MediaPipe, 64x64 latents, 2 steps, the random VAE and SMIRK weights in the published layout."""
    from smirk_weights import published_layout_weights

    (comfy.models / "smirk").mkdir(exist_ok=True)
    torch.save(published_layout_weights(0), comfy.models / "smirk" / "SMIRK_em1.pt")
    prompt = comfy.workflow_prompt(name)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "LoadImage":
            photo = node["_meta"]["title"] in ("Identity photo", "Photo to edit")  # the person; the rest drive
            inputs["image"] = "example.png" if photo else "astronaut.png"
        elif kind == "GenAffectFaceAnalyzerLoader":
            inputs.update(provider="CPU", detection_size=256)
        elif kind == "GenAffectAlignFace":
            inputs["size"] = 256  # the tiny detector must find the painted face again in the crop
        elif kind == "EmptyLatentImage":
            inputs.update(width=64, height=64)
        elif kind == "KSampler":
            inputs["steps"] = 2
        elif kind == "VAELoader":
            inputs["vae_name"] = "sd15_vae_random.safetensors"
    return prompt


def _outputs(result, kind: str) -> list:
    return [item for output in result["outputs"].values() for item in output.get(kind, [])]


NEEDS_LANDMARKER = pytest.mark.skipif(
    not HAS_REAL_LANDMARKER, reason="set GENAFFECT_TEST_MODELS to a models folder with mediapipe/face_landmarker.task")


@NEEDS_LANDMARKER
def test_arc2face_example_workflow_runs_end_to_end(arc2face_models):
    result = run_ok(arc2face_models, small_workflow_prompt(arc2face_models, "arc2face_expression_sheet"), timeout=600)
    assert len(_outputs(result, "images")) == 1  # the sheet of 3 generated faces
    assert _outputs(result, "text"), "the metrics summary"


@NEEDS_LANDMARKER
def test_arc2face_transfer_workflow_runs_end_to_end(arc2face_models):
    result = run_ok(arc2face_models, small_workflow_prompt(arc2face_models, "arc2face_expression_transfer"),
                    timeout=600)
    assert len(_outputs(result, "images")) == 2  # the aligned photo and its edit
    assert _outputs(result, "text"), "the metrics summary"


def test_unloading_frees_the_expression_adapter_with_its_model_without_a_leak_warning(arc2face_models):
    comfy = arc2face_models
    for strength in (0.9, 0.8):  # new patched models replace the cached ones, as a user's edits do
        prompt = arc2face_graph(f"arc2face_strength_{strength}")
        prompt["adapter"]["inputs"]["strength"] = strength
        run_ok(comfy, prompt, timeout=600)
    status, _ = comfy.post("/free", {"unload_models": True, "free_memory": True})
    assert status == 200
    prompt = arc2face_graph("arc2face_after_free")
    prompt["adapter"]["inputs"]["strength"] = 0.7
    run_ok(comfy, prompt, timeout=600)
    leaks = [line for line in comfy.log().splitlines() if "memory leak with model" in line]
    assert not leaks, leaks


@NEEDS_LANDMARKER
def test_the_warp_guide_workflow_drives_arc2face_with_the_photo_warped_to_each_expression(arc2face_models):
    """warp_guide_arc2face.json: the photo warped to 4 presets (the real landmarker finds the astronaut's face), each
    warp measured (SMIRK) and given to the Expression Adapter, one generated face per expression."""
    prompt = small_workflow_prompt(arc2face_models, "warp_guide_arc2face")
    for node in prompt.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = "astronaut.png"  # a real face for MediaPipe beside a painted one for insightface
        elif node["class_type"] == "GenAffectFaceAnalyzerLoader":
            node["inputs"]["detection_size"] = 512  # the painted face sits on the 512 px grid
    result = run_ok(arc2face_models, prompt, timeout=900)
    images = _outputs(result, "images")
    assert len(images) == 4 + 4  # the 4 guides and the 4 generated faces
