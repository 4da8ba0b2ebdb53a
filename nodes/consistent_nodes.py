"""Consistent attention as a MODEL patch and as a one-block batch sampler (category GenAffect/sampling)."""

from __future__ import annotations

from ..models.generation.consistent_attention import ConsistencySettings
from .hosting import consistent_attention, patching
from .patch_node import ModelPatchNode
from .sampling.guard import guard_of
from .sampling.inputs import (
    MAX_SEED,
    guard_input,
    people_input,
    people_of,
    region_input,
    sampler_inputs,
    sharing_inputs,
)
from .sampling.set_sampler import SetSampling, first_value, rows_of, set_size


class GenAffectConsistentAttention(ModelPatchNode):
    DESCRIPTION = (
        "Patches a MODEL so the images of one batch attend to each other's tokens (consistent self-attention, "
        "training-free): generate a whole expression set at once with one latent batch and the set keeps one "
        "identity. Works with the usual KSampler or SamplerCustom on SD1.x, SDXL, FLUX.1 and Kontext, FLUX.2, "
        "Qwen-Image (and Qwen-Image-Edit), Chroma and SD3; with an editor's reference photo only the generated "
        "images share. The input model is not changed."
    )
    FUNCTION = "patch"
    OUTPUT_TOOLTIPS = ("A patched copy of the model; sample it with a latent batch of the set's size.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.x, SDXL, FLUX.1/Kontext, FLUX.2, Qwen-Image, Chroma or SD3 "
                                               "model."}),
                **sharing_inputs(),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": "fixed",
                                 "tooltip": "Seeds the choice of borrowed tokens at each step; convert it to an input "
                                            "and wire the sampler's seed to make a run reproducible from one number."}),
            },
            "optional": {**region_input(), **people_input()},
        }

    def patch(self, model, rate, anchors, start_percent, end_percent, blocks, seed, region=None, face_crops=None):
        groups = None if face_crops is None else people_of(face_crops, len(face_crops.people))
        settings = ConsistencySettings(rate=rate, anchors=anchors, seed=seed, region=region, groups=groups)
        return (consistent_attention.install(model, settings, start_percent=start_percent, end_percent=end_percent,
                                         blocks=blocks),)


class GenAffectConsistentBatchSampler:
    DESCRIPTION = (
        "Samples a whole set of images together with consistent attention, in one block: one prompt for all, or one "
        "prompt per image (e.g. Expression To Prompt -> CLIP Text Encode). Uses ComfyUI's own samplers, shows "
        "progress with previews, stops on Cancel and leaves the input MODEL untouched. A latent batch of 1 is "
        "repeated to the number of prompts. With a Sampling Guard it decodes and scores each round and re-samples "
        "only the images whose face fails."
    )
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "sample"
    INPUT_IS_LIST = True  # the positive may arrive as one CONDITIONING per image
    RETURN_TYPES = ("LATENT", "STRING")
    RETURN_NAMES = ("latent", "guard_report")
    OUTPUT_TOOLTIPS = ("The set's latents, image i from prompt i (with a guard: the chosen candidate of each).",
                       "With a guard: the rounds, every candidate's scores and which images failed, as JSON.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.x, SDXL, FLUX.1/Kontext, FLUX.2, Qwen-Image, Chroma or SD3 "
                                               "model (for FLUX, put Flux Guidance on the prompts and use cfg 1)."}),
                "positive": ("CONDITIONING", {"tooltip": "One prompt for every image, or one per image in order."}),
                "negative": ("CONDITIONING", {"tooltip": "One negative for every image, or one per image."}),
                "latent_image": ("LATENT", {"tooltip": "A batch of N latents (Empty Latent Image with batch size N), "
                                                       "or a batch of 1 repeated to the number of prompts."}),
                **sampler_inputs(cfg=7.0),
                **sharing_inputs(),
            },
            "optional": {**region_input(), **guard_input(), **people_input()},
        }

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, denoise,
               rate, anchors, start_percent, end_percent, blocks, region=None, guard=None, face_crops=None):
        model, latent, seed, region = first_value(model), first_value(latent_image), first_value(seed), first_value(region)
        images = set_size(latent, positive)
        people = people_of(first_value(face_crops), images)
        sampling = SetSampling(latent, positive, negative, images, patching.backbone_of(model).text_mask,
                               first_value(steps), first_value(cfg), first_value(sampler_name), first_value(scheduler),
                               first_value(denoise), anchors=first_value(anchors))

        def patch(rows, round_seed, anchor_count):
            settings = ConsistencySettings(rate=first_value(rate), anchors=anchor_count, seed=round_seed,
                                           region=rows_of(region, rows, images),
                                           groups=None if people is None else tuple(people[r] for r in rows))
            return consistent_attention.install(model, settings, start_percent=first_value(start_percent),
                                                end_percent=first_value(end_percent), blocks=first_value(blocks))

        return sampling.sample(patch, seed, guard_of(first_value(guard)))
