"""What the sampling tests share: the tiny models conftest.py puts in the server's folders and a loader for the
CLIP-L that conditions them, a graph run that must succeed, the latents a graph saved, and the FLUX + adapter
example workflow on the tiny FLUX with an adapter sized for it."""

from __future__ import annotations

import glob

import torch
from safetensors.torch import load_file
from tiny_dit import as_trained

MODELS = {  # diffusion model file, empty-latent node (4 or 16 channels)
    "sd15": ("tiny_sd15.safetensors", "EmptyLatentImage"),
    "flux": ("tiny_flux.safetensors", "EmptySD3LatentImage"),
}
CLIP = {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l_random.safetensors", "type": "stable_diffusion",
                                               "device": "default"}}


def saved_latent(comfy, kind: str, name: str) -> torch.Tensor:
    files = sorted(glob.glob(str(comfy.work / "output" / "latents" / f"{kind}_{name}_*.latent")))
    assert files, f"no latent saved for {kind} {name}"
    return load_file(files[-1])["latent_tensor"]


def run_ok(comfy, prompt, timeout=300):
    result = comfy.run(prompt, timeout=timeout)
    errors = [(m[1]["node_type"], m[1]["exception_message"], m[1]["traceback"][-3:])
              for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert result["status"]["status_str"] == "success", errors
    return result


def write_adapter_for_tiny_flux(comfy) -> None:
    """An adapter sized for the server's tiny FLUX (width 256, 1 double / 2 single blocks), output layers non-zero."""
    from genaffect.models.generation.dit_adapter import DiTAdapter, DiTAdapterConfig

    torch.manual_seed(4)
    adapter = DiTAdapter(DiTAdapterConfig(family="flux", hidden_size=256, double_blocks=1, single_blocks=2,
                                          token_width=64, identity_tokens=4, expression_tokens=4, heads=2, head_dim=32,
                                          resampler_depth=1))
    as_trained(adapter).save(str(comfy.models / "genaffect" / "genaffect_dit_adapter.safetensors"))


def adapter_workflow(comfy, identity_strength=1.0, expression_strength=1.0, rate=0.5) -> dict:
    prompt = comfy.workflow_prompt("flux_adapter_expression_sheet")
    by_type = {node["class_type"]: (key, node) for key, node in prompt.items()}
    by_type["UNETLoader"][1]["inputs"]["unet_name"] = MODELS["flux"][0]
    by_type["VAELoader"][1]["inputs"]["vae_name"] = "flux_vae_random.safetensors"
    prompt[by_type["DualCLIPLoader"][0]] = CLIP  # the tiny FLUX reads CLIP-L's 768-wide text
    by_type["EmptySD3LatentImage"][1]["inputs"].update(width=64, height=64)
    by_type["GenAffectExpressionPreset"][1]["inputs"]["expressions"] = "happy, sad, surprised"
    by_type["GenAffectFaceAnalyzerLoader"][1]["inputs"].update(provider="CPU", detection_size=256)
    by_type["LoadImage"][1]["inputs"]["image"] = "example.png"  # painted faces the tiny detector finds
    by_type["GenAffectDiTSampler"][1]["inputs"].update(steps=2, identity_strength=identity_strength,
                                                        expression_strength=expression_strength, rate=rate)
    return prompt
