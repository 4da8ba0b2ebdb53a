"""The Gen-AFFECT DiT adapter in ComfyUI: loader, apply, one-block sampler (category GenAffect/sampling)."""

from __future__ import annotations

import torch

from ..models.errors import GenAffectInputError, ModelFileError
from ..models.generation.consistent_attention import ConsistencySettings
from ..models.generation.dit_adapter import DiTAdapter, load_dit_adapter
from . import comfy_host, sockets
from .hosting import consistent_attention, dit_adapter, patching
from .patch_node import ModelPatchNode
from .sampling.guard import guard_of
from .sampling.inputs import guard_input, sampler_inputs, sharing_inputs
from .sampling.set_sampler import SetSampling, first_value, rows_of

FOLDER = "genaffect"
EXTENSIONS = (".safetensors",)
EXAMPLE_NAME = "genaffect_dit_adapter.safetensors"
TRAINING_HINT = ("No Gen-AFFECT adapter weights are published: train one with training/ (docs/training.md "
                 "in the git repository) and put the exported .safetensors in models/genaffect/.")


def adapter_files() -> list[str]:
    """Adapters in models/genaffect/ (its mappings/ subfolder holds expression mappings, not adapters)."""
    return [name for name in comfy_host.list_model_files(FOLDER, EXTENSIONS) if not name.startswith("mappings/")]


def dit_adapter_of(adapter) -> DiTAdapter:
    if isinstance(adapter, DiTAdapter):
        return adapter
    raise GenAffectInputError(f"this input is a {type(adapter).__name__}, not a Gen-AFFECT DiT adapter; take the "
                              "adapter output of GenAffect DiT Adapter Loader.")


class GenAffectDiTAdapterLoader:
    DESCRIPTION = (
        "Loads a Gen-AFFECT identity-expression adapter for a diffusion transformer (FLUX.1/Kontext, FLUX.2, "
        "Qwen-Image and its Edit models, Chroma, SD3) from models/genaffect/. The file records the "
        "backbone it was trained for; applying it to another model is refused with the reason. " + TRAINING_HINT
    )
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "load"
    RETURN_TYPES = (sockets.DIT_ADAPTER, "STRING")
    RETURN_NAMES = ("adapter", "info")
    OUTPUT_TOOLTIPS = ("The adapter, for GenAffect Apply DiT Adapter or GenAffect DiT Sampler.",
                       "The backbone it was trained for, its token counts and size.")

    @classmethod
    def INPUT_TYPES(cls):
        files = adapter_files()
        return {"required": {"adapter_name": (files or [EXAMPLE_NAME], {
            "tooltip": "An adapter .safetensors exported by training/train.py, in models/genaffect/."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, adapter_name):
        """Before a run: the adapter file is there (the menu lists an example name when there is none)."""
        return comfy_host.validation_answer(lambda: _adapter_path(adapter_name))

    @classmethod
    def IS_CHANGED(cls, adapter_name):
        return comfy_host.file_identity(comfy_host.model_file_path(FOLDER, adapter_name, EXTENSIONS))

    def load(self, adapter_name):
        adapter = load_dit_adapter(_adapter_path(adapter_name))
        return (adapter, adapter.describe())


def _adapter_path(adapter_name: str) -> str:
    path = comfy_host.model_file_path(FOLDER, adapter_name, EXTENSIONS)
    if path is None or adapter_name.startswith("mappings/"):
        raise ModelFileError(f"{adapter_name} is not in models/genaffect/ "
                             f"({', '.join(comfy_host.model_roots(FOLDER))}). {TRAINING_HINT}")
    return path


def adapter_inputs() -> dict:
    return {
        "identity_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                        "tooltip": "How strongly the identity tokens steer the face; 0 turns them off."}),
        "expression_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                          "tooltip": "How strongly the expression tokens steer it; 0 turns them off."}),
    }


def adapter_conditions(adapter: DiTAdapter, identity, expression) -> tuple[torch.Tensor, torch.Tensor]:
    """The identity and expression rows the adapter's encoder reads (``DiTAdapter.conditions``)."""
    if getattr(identity, "embedding", None) is None:
        raise GenAffectInputError("identity is not a GA_IDENTITY; take the identity output of GenAffect Extract "
                                  "Identity.")
    return adapter.conditions(identity.one_person("GenAffect DiT adapter"), expression)


class GenAffectApplyDiTAdapter(ModelPatchNode):
    DESCRIPTION = (
        "Adds a Gen-AFFECT adapter to a diffusion-transformer MODEL (FLUX.1/Kontext, FLUX.2, Qwen-Image, Chroma, "
        "SD3): after the blocks it was trained for, the generated image tokens (never an edit's reference photo) "
        "also attend to identity tokens (from the ArcFace embedding) and expression tokens. With N expressions "
        "sample a latent batch of N (image i gets expression i); one expression applies to all. "
        "Negative prompts get no adapter. The input model is not changed. " + TRAINING_HINT
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion transformer the adapter was trained on."}),
                "adapter": (sockets.DIT_ADAPTER, {"tooltip": "From GenAffect DiT Adapter Loader."}),
                "identity": (sockets.IDENTITY, {"tooltip": "From GenAffect Extract Identity."}),
                "expression": (sockets.EXPRESSION, {"tooltip": "One expression per image (presets, editor, estimated)."}),
                **adapter_inputs(),
                **patching.schedule_range_inputs("the adapter"),
            },
        }

    def apply(self, model, adapter, identity, expression, identity_strength, expression_strength, start_percent,
              end_percent):
        adapter = dit_adapter_of(adapter)
        identity_vector, expression_rows = adapter_conditions(adapter, identity, expression)
        return (dit_adapter.install(model, adapter, identity_vector, expression_rows, identity_strength,
                                  expression_strength, start_percent, end_percent),)


class GenAffectDiTSampler:
    DESCRIPTION = (
        "The whole expression set in one block on a diffusion transformer: the Gen-AFFECT adapter (identity + image i's "
        "expression) and consistent attention across the set, sampled with ComfyUI's samplers, with previews and "
        "Cancel. FLUX's distilled guidance is set here (use cfg 1). A latent batch of 1 is repeated to the number "
        "of expressions. With a Sampling Guard it decodes and scores each round and re-samples only the "
        "expressions whose face fails. " + TRAINING_HINT
    )
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "sample"
    INPUT_IS_LIST = True  # the positive may arrive as one CONDITIONING per image
    RETURN_TYPES = ("LATENT", "STRING")
    RETURN_NAMES = ("latent", "guard_report")
    OUTPUT_TOOLTIPS = ("The set's latents, image i with expression i (with a guard: the chosen candidate of each).",
                       "With a guard: the rounds, every candidate's scores and which expressions failed, as JSON.")

    @classmethod
    def INPUT_TYPES(cls):
        sharing = {k: v for k, v in sharing_inputs().items() if k != "blocks"}  # DiTs share in every block
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion transformer the adapter was trained on."}),
                "adapter": (sockets.DIT_ADAPTER, {"tooltip": "From GenAffect DiT Adapter Loader."}),
                "identity": (sockets.IDENTITY, {"tooltip": "From GenAffect Extract Identity."}),
                "expression": (sockets.EXPRESSION, {"tooltip": "The set's expressions, one image each."}),
                "positive": ("CONDITIONING", {"tooltip": "One prompt for all images, or one per image."}),
                "negative": ("CONDITIONING", {"tooltip": "Used only when cfg > 1 (FLUX dev/schnell take cfg 1)."}),
                "latent_image": ("LATENT", {"tooltip": "A batch of 1 (repeated) or one latent per expression."}),
                **sampler_inputs(cfg=1.0),
                "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1,
                                       "tooltip": "FLUX's distilled guidance (as Flux Guidance); ignored for SD3."}),
                **adapter_inputs(),
                **sharing,
            },
            "optional": guard_input(),
        }

    def sample(self, model, adapter, identity, expression, positive, negative, latent_image, seed, steps, cfg,
               sampler_name, scheduler, denoise, guidance, identity_strength, expression_strength, rate, anchors,
               start_percent, end_percent, guard=None):
        model, adapter, expression = first_value(model), dit_adapter_of(first_value(adapter)), first_value(expression)
        identity_vector, expression_rows = adapter_conditions(adapter, first_value(identity), expression)
        latent, seed = first_value(latent_image), first_value(seed)
        images = len(expression) if latent["samples"].shape[0] == 1 else latent["samples"].shape[0]
        backbone = patching.backbone_of(model)
        sampling = SetSampling(latent, positive, negative, images, backbone.text_mask, first_value(steps),
                               first_value(cfg), first_value(sampler_name), first_value(scheduler),
                               first_value(denoise), anchors=first_value(anchors),
                               positive_values={"guidance": first_value(guidance)} if backbone.distilled_guidance
                               else {})

        def patch(rows, round_seed, anchor_count):
            patched = dit_adapter.install(model, adapter, identity_vector, rows_of(expression_rows, rows, images),
                                          first_value(identity_strength), first_value(expression_strength))
            settings = ConsistencySettings(rate=first_value(rate), anchors=anchor_count, seed=round_seed)
            return consistent_attention.install(patched, settings, start_percent=first_value(start_percent),
                                                end_percent=first_value(end_percent))

        return sampling.sample(patch, seed, guard_of(first_value(guard)), target=expression)
