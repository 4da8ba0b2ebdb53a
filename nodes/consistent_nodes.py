"""Consistent attention as a MODEL patch and as a one-block batch sampler (category GenAffect/sampling)."""

from __future__ import annotations

from ..models.consistent_attention import ConsistencySettings
from ..models.errors import GenAffectInputError
from . import comfy_host, consistent_hosts
from .conditioning_batch import stack_per_image

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
        "blocks": (list(consistent_hosts.UNET_BLOCKS), {
            "default": "up",
            "tooltip": "SD1.x/SDXL: which UNet self-attention blocks share (StoryDiffusion uses the up blocks). "
                       "FLUX and SD3 share in every joint-attention block whatever is chosen here."}),
    }


def region_input():
    return {"region": ("MASK", {
        "tooltip": "Optional: only tokens inside this mask are borrowed (e.g. the face), so backgrounds and clothes "
                   "stay free. One mask for all images or one per image; resized to each block's token grid."})}


class GenAffectConsistentAttention:
    DESCRIPTION = (
        "Patches a MODEL so the images of one batch attend to each other's tokens (consistent self-attention, "
        "training-free): generate a whole expression set at once with one latent batch and the set keeps one "
        "identity. Works with the usual KSampler or SamplerCustom on SD1.x, SDXL, FLUX and SD3. The input model is "
        "not changed."
    )
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A patched copy of the model; sample it with a latent batch of the set's size.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.x, SDXL, FLUX or SD3 model."}),
                **sharing_inputs(),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": "fixed",
                                 "tooltip": "Seeds the choice of borrowed tokens at each step; convert it to an input "
                                            "and wire the sampler's seed to make a run reproducible from one number."}),
            },
            "optional": region_input(),
        }

    def patch(self, model, rate, anchors, start_percent, end_percent, blocks, seed, region=None):
        settings = ConsistencySettings(rate=rate, anchors=anchors, seed=seed, region=region)
        return (consistent_hosts.install(model, settings, start_percent=start_percent, end_percent=end_percent,
                                         blocks=blocks),)


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


class GenAffectConsistentBatchSampler:
    DESCRIPTION = (
        "Samples a whole set of images together with consistent attention, in one block: one prompt for all, or one "
        "prompt per image (e.g. Expression To Prompt -> CLIP Text Encode). Uses ComfyUI's own samplers, shows "
        "progress with previews, stops on Cancel and leaves the input MODEL untouched. A latent batch of 1 is "
        "repeated to the number of prompts."
    )
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "sample"
    INPUT_IS_LIST = True  # the positive may arrive as one CONDITIONING per image
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The set's latents, image i from prompt i.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.x, SDXL, FLUX or SD3 model (for FLUX, put Flux Guidance on "
                                               "the prompts and use cfg 1)."}),
                "positive": ("CONDITIONING", {"tooltip": "One prompt for every image, or one per image in order."}),
                "negative": ("CONDITIONING", {"tooltip": "One negative for every image, or one per image."}),
                "latent_image": ("LATENT", {"tooltip": "A batch of N latents (Empty Latent Image with batch size N), "
                                                       "or a batch of 1 repeated to the number of prompts."}),
                **sampler_inputs(cfg=7.0),
                **sharing_inputs(),
            },
            "optional": region_input(),
        }

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, denoise,
               rate, anchors, start_percent, end_percent, blocks, region=None):
        model, latent, seed = first_value(model), first_value(latent_image), first_value(seed)
        samples, positive, negative = latent_set(latent, positive, negative)
        settings = ConsistencySettings(rate=first_value(rate), anchors=first_value(anchors), seed=seed, region=first_value(region))
        patched = consistent_hosts.install(model, settings, start_percent=first_value(start_percent),
                                           end_percent=first_value(end_percent), blocks=first_value(blocks))
        return (sample_set(patched, latent, samples, positive, negative, seed, first_value(steps), first_value(cfg),
                           first_value(sampler_name), first_value(scheduler), first_value(denoise)),)


def latent_set(latent: dict, positive: list, negative: list, images: int | None = None):
    """(latents, positive, negative) for a set of ``images`` (default: the latent batch, or the number of
    prompts when the latent batch is 1): a batch of 1 is repeated, per-image prompts are stacked."""
    samples = latent["samples"]
    if images is None:
        images = len(positive) if samples.shape[0] == 1 and len(positive) > 1 else samples.shape[0]
    if samples.shape[0] == 1 and images > 1:
        samples = samples.repeat(images, *([1] * (samples.ndim - 1)))
    elif samples.shape[0] != images:
        raise GenAffectInputError(f"the latent batch has {samples.shape[0]} images for a set of {images}; use a "
                                  f"batch of {images}, or of 1 (it is repeated).")
    return samples, stack_per_image(positive, images, "positive"), stack_per_image(negative, images, "negative")


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
