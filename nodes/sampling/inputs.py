"""The inputs the set samplers and the consistent-attention patch declare: sharing, region, sampler settings
and the optional guard."""

from __future__ import annotations

from ...models.errors import GenAffectInputError
from .. import sockets
from ..hosting.consistent_attention import UNET_BLOCKS

MAX_SEED = 0xFFFFFFFFFFFFFFFF
# Outside ComfyUI (tests) the sampler lists are not importable; these are names every ComfyUI has.
FALLBACK_SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "ddim", "uni_pc")
FALLBACK_SCHEDULERS = ("simple", "normal", "karras", "exponential", "sgm_uniform", "beta")


def sharing_inputs():
    """The consistent-attention settings both nodes take."""
    return {
        "rate": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                           "tooltip": "Share of the other images' tokens each image also attends to. 0 turns "
                                      "sharing off (the model is then exactly unchanged); 0.3-0.7 keeps one identity "
                                      "while letting expressions differ."}),
        "anchors": ("INT", {"default": 0, "min": 0, "max": 64,
                            "tooltip": "0: every image borrows from all others (cost grows with N²). a > 0: everyone "
                                       "borrows only from the first a images, so the cost stays linear in N."}),
        "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "Where in the sampling schedule sharing begins (0 = the first step)."}),
        "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Where sharing ends (1 = the last step). Ending at 0.6-0.8 leaves the last "
                                             "steps free to refine each image's details."}),
        "blocks": (list(UNET_BLOCKS), {
            "default": "up",
            "tooltip": "SD1.x/SDXL: which UNet self-attention blocks share (StoryDiffusion uses the up blocks). "
                       "Diffusion transformers (FLUX.1/Kontext, FLUX.2, Qwen-Image, Chroma, SD3) share in every "
                       "joint-attention block whatever is chosen here."}),
    }


def people_input():
    return {"face_crops": (sockets.FACE_CROPS, {
        "tooltip": "Optional, from GenAffect Crop Faces: the set is crops of several people, and each crop shares "
                   "tokens only with crops of the same person (never mixing two people's faces). Unconnected: the "
                   "whole set is one person."})}


def people_of(face_crops, images: int) -> tuple[int, ...] | None:
    """The person of each image of the set, from Crop Faces' face_crops (None: one person)."""
    if face_crops is None:
        return None
    people = tuple(face_crops.people)
    if len(people) != images:
        raise GenAffectInputError(f"face_crops describes {len(people)} crops but the set has {images} images; sample "
                                  "the crops of that Crop Faces node, one image per crop.")
    return people


def region_input():
    return {"region": ("MASK", {
        "tooltip": "Optional: only tokens inside this mask are borrowed (e.g. the face), so backgrounds and clothes "
                   "stay free. One mask for all images or one per image; resized to each block's token grid."})}


def sampler_inputs(cfg: float) -> dict:
    """Seed, steps, CFG, ComfyUI's sampler and schedule, denoise: what a one-block sampler takes."""
    try:
        import comfy.samplers

        samplers, schedulers = comfy.samplers.KSampler.SAMPLERS, comfy.samplers.KSampler.SCHEDULERS
    except ImportError:
        samplers, schedulers = FALLBACK_SAMPLERS, FALLBACK_SCHEDULERS
    return {
        "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": "randomize",
                         "tooltip": "Seeds the noise and the choice of borrowed tokens: same seed, same set."}),
        "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Sampling steps."}),
        "cfg": ("FLOAT", {"default": cfg, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                          "tooltip": "Classifier-free guidance scale (1 for FLUX, which takes Flux Guidance)."}),
        "sampler_name": (list(samplers), {"tooltip": "ComfyUI's sampler."}),
        "scheduler": (list(schedulers), {"tooltip": "ComfyUI's noise schedule."}),
        "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "1 for text to image; lower keeps more of the input latents."}),
    }


def guard_input() -> dict:
    """The samplers' optional guard input."""
    return {"guard": (sockets.SAMPLING_GUARD, {
        "tooltip": "Optional, from GenAffect Sampling Guard: decode and score each round and re-sample only the "
                   "expressions whose face fails (not the person, copied, or another expression), with new seeds, "
                   "until all pass or the retries are spent. Unconnected: the set is sampled once, as before."})}
