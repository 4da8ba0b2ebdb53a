"""What the one-block samplers share: their inputs, the set's latents and prompts, and ComfyUI's sampling
of the whole set with previews and Cancel."""

from __future__ import annotations

import torch

from ..models.errors import GenAffectInputError
from . import comfy_host
from .conditioning_batch import stack_per_image
from .hosting.consistent_attention import UNET_BLOCKS

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


def first_value(value):
    return value[0] if isinstance(value, list) else value


def set_size(latent: dict, positive: list) -> int:
    """The number of images of the set: the latent batch, or the number of prompts when the latent batch is 1."""
    samples = latent["samples"]
    return len(positive) if samples.shape[0] == 1 and len(positive) > 1 else samples.shape[0]


def rows_of(value, rows: list[int], images: int):
    """A per-image tensor or list cut to ``rows`` of the set; one shared by every image is kept as it is."""
    if value is None or len(value) == 1 or len(value) != images:
        return value
    return value[rows] if isinstance(value, torch.Tensor) else [value[r] for r in rows]


def latent_rows(latent: dict, rows: list[int], images: int) -> dict:
    """The LATENT for some of the set's images (a guarded round): per-image latents and noise masks cut to
    ``rows``; batch_index is kept only when ``rows`` is the whole set in order (new rounds draw new noise)."""
    part = {key: value for key, value in latent.items() if key not in ("samples", "noise_mask", "batch_index")}
    part["samples"] = rows_of(latent["samples"], rows, images)
    if latent.get("noise_mask") is not None:
        part["noise_mask"] = rows_of(latent["noise_mask"], rows, images)
    if latent.get("batch_index") is not None and rows == list(range(images)):
        part["batch_index"] = latent["batch_index"]
    return part


def latent_set(latent: dict, positive: list, negative: list, images: int | None = None, text_mask: bool = False):
    """(latents, positive, negative) for a set of ``images`` (default: the latent batch, or the number of
    prompts when the latent batch is 1): a batch of 1 is repeated, per-image prompts are stacked
    (``text_mask``: zero-padded with a padding mask, for a model that reads one)."""
    samples = latent["samples"]
    if images is None:
        images = set_size(latent, positive)
    if samples.shape[0] == 1 and images > 1:
        samples = samples.repeat(images, *([1] * (samples.ndim - 1)))
    elif samples.shape[0] != images:
        raise GenAffectInputError(f"the latent batch has {samples.shape[0]} images for a set of {images}; use a "
                                  f"batch of {images}, or of 1 (it is repeated).")
    return (samples, stack_per_image(positive, images, "positive", text_mask),
            stack_per_image(negative, images, "negative", text_mask))


def sample_set(patched, latent: dict, samples, positive, negative, seed, steps, cfg, sampler_name, scheduler,
               denoise) -> dict:
    """ComfyUI's sampling of the whole set at once, with previews and Cancel; returns the LATENT."""
    import comfy.sample
    import comfy.utils
    import latent_preview

    images = samples.shape[0]
    samples = comfy.sample.fix_empty_latent_channels(patched, samples)
    batch_index = latent.get("batch_index") if latent["samples"].shape[0] == images else None
    noise = comfy.sample.prepare_noise(samples, seed, batch_index)
    preview = latent_preview.prepare_callback(patched, steps)

    def callback(step, x0, x, total_steps):
        preview(step, x0, x, total_steps)
        comfy_host.check_interrupted()

    noise_mask = latent.get("noise_mask")
    if noise_mask is not None and noise_mask.shape[0] not in (1, images):
        raise GenAffectInputError(f"the latent's noise mask has {noise_mask.shape[0]} entries for {images} images.")
    out = comfy.sample.sample(
        patched, noise, steps, cfg, sampler_name, scheduler, positive, negative, samples,
        denoise=denoise, noise_mask=noise_mask, callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
    )
    result = {key: value for key, value in latent.items() if key not in ("samples", "batch_index")}
    result["samples"] = out
    return result
