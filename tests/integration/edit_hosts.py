"""Consistent attention and the DiT adapter on ComfyUI's instruction-editor families, in-process.

Run with ComfyUI's Python from the ComfyUI folder: ``python edit_hosts.py <scratch dir>``; prints JSON.
Tiny randomly initialised Qwen-Image (full width, as ComfyUI's detection assumes, with one block),
FLUX.2 and FLUX.1 (Kontext-style) transformers are built from ComfyUI's own classes, saved and loaded
by ComfyUI's ``load_diffusion_model`` (its detection names the family). Each family samples a set of
3 images with one reference latent in the conditioning (as ReferenceLatent / the edit encoders put
it), through the pack's Consistent Attention node: unpatched, rate 0, rate 0.5, and the unpatched
model again. A recording replacement on the first block keeps its output, so the test can compare
the reference tokens of the plain and the shared run. The pack's Apply DiT Adapter (strengths 0 and
1) runs on each family too, and ComfyUI's Qwen-Image with the adapter is compared with diffusers'
Qwen-Image with the trainer's hooks on the same weights and inputs. On Qwen-Image, a LoRA in PixelSmile's
key layout goes through ComfyUI's own LoRA loading, and prompts of different lengths stacked as the
samplers stack them (zero padding and a padding mask) are compared with each prompt alone.
"""

from __future__ import annotations

import json
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [os.getcwd(), os.path.join(REPO, "tools"), os.path.join(REPO, "tests", "support"),
                os.path.dirname(os.path.abspath(__file__))]  # ComfyUI, helpers
SCRATCH = sys.argv[-1]
sys.argv = [sys.argv[0], "--cpu"]  # what ComfyUI's argument parser sees

TEXT = 8
IMAGES = 3


def comfy_models():
    import comfy.ops
    from comfy.ldm.flux.model import Flux
    from editor_models import flux2, qwen_image

    ops = comfy.ops.disable_weight_init
    return {
        # name (= ComfyUI's image_model): (builder, text width, latent of one image, reference latent)
        "qwen_image": (qwen_image, 3584, (16, 1, 8, 8), (16, 1, 8, 8)),
        "flux2": (lambda: flux2(64), 64, (128, 4, 4), (128, 6, 4)),
        "flux": (lambda: Flux(in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64, hidden_size=256,
                              mlp_ratio=4.0, num_heads=2, depth=1, depth_single_blocks=2, axes_dim=[16, 56, 56],
                              theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[],
                              operations=ops),
                 64, (16, 8, 8), (16, 8, 8)),
    }


class FirstBlockRecorder:
    """A ("double_block", 0) replacement that runs the block (through any replacement already there, e.g.
    the adapter's) and keeps its image-stream output."""

    def __init__(self, inner=None):
        self.inner = inner
        self.outputs = []

    def __call__(self, args, extra):
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        self.outputs.append(out["img"].detach().clone())
        return out


def sample(model, latent, conditioning, seed=5, steps=2, cfg=1.5, noise=None):
    import comfy.sample

    noise = comfy.sample.prepare_noise(latent, seed) if noise is None else noise
    negative = [[torch.zeros_like(conditioning[0][0]), dict(conditioning[0][1])]]
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", conditioning, negative, latent,
                               denoise=1.0, disable_pbar=True, seed=seed)


def recorded(model):
    """A clone with a FirstBlockRecorder on its first block, and the recorder."""
    existing = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    recorder = FirstBlockRecorder(existing.get(("double_block", 0)))
    clone = model.clone()
    clone.set_model_patch_replace(recorder, "dit", "double_block", 0)
    return clone, recorder


def family_checks(name, builder, text_width, latent_shape, reference_shape, scratch):
    import comfy.sd
    from genaffect.models.generation.backbones import TokenLayout, patch_tokens
    from genaffect.models.generation.dit_adapter import DiTAdapter, DiTAdapterConfig, expression_input
    from genaffect.nodes.consistent_nodes import GenAffectConsistentAttention
    from genaffect.nodes.hosting import dit_adapter, patching
    from safetensors.torch import save_file
    from tiny_diffusion_models import randomise
    from tiny_dit import as_trained

    path = os.path.join(scratch, f"tiny_{name}.safetensors")
    save_file({k: v.to(torch.float16).contiguous() for k, v in randomise(builder(), 11).state_dict().items()}, path)
    model = comfy.sd.load_diffusion_model(path, model_options={"dtype": torch.float32})
    result = {"detected": model.model.model_config.unet_config.get("image_model"),
              "family": patching.backbone_of(model).name}

    g = torch.Generator().manual_seed(2)
    latent = torch.zeros(IMAGES, *latent_shape)
    reference = torch.randn(1, *reference_shape, generator=g)
    extras = {"reference_latents": [reference], "guidance": 3.5}
    if name == "flux":
        extras["pooled_output"] = torch.randn(1, 32, generator=g)
    conditioning = [[torch.randn(1, TEXT, text_width, generator=g), extras]]
    patch = GenAffectConsistentAttention().patch

    plain_model, plain_recorder = recorded(model)
    plain = sample(plain_model, latent, conditioning)
    off = sample(patch(model, 0.0, 0, 0.0, 1.0, "up", 7)[0], latent, conditioning)
    shared_model, shared_recorder = recorded(patch(model, 0.5, 0, 0.0, 1.0, "up", 7)[0])
    shared = sample(shared_model, latent, conditioning)
    again = sample(model, latent, conditioning)

    patch_size = model.model.diffusion_model.patch_size
    tokens = TokenLayout(0, patch_tokens(latent.shape, patch_size), patch_tokens(reference.shape, patch_size))
    first_plain, first_shared = plain_recorder.outputs[0], shared_recorder.outputs[0]  # same inputs at step 1
    result.update(
        tokens=[tokens.generated, tokens.references],
        block_tokens=first_plain.shape[1],
        rate0_equal=torch.equal(off, plain),
        rate05_change=float((shared - plain).abs().max()),
        input_model_unchanged=torch.equal(again, plain),
        finite=bool(torch.isfinite(shared).all()),
        reference_tokens_max_abs=float((first_shared[:, tokens.reference_slice]
                                        - first_plain[:, tokens.reference_slice]).abs().max()),
        generated_tokens_change=float((first_shared[:, tokens.generated_slice]
                                       - first_plain[:, tokens.generated_slice]).abs().max()),
    )

    # The DiT adapter on this family, through the Apply DiT Adapter node's install.
    sizes = dit_adapter.backbone_sizes(model)
    torch.manual_seed(4)
    adapter = as_trained(DiTAdapter(DiTAdapterConfig(**sizes, token_width=64, identity_tokens=4, expression_tokens=4,
                                                     heads=2, head_dim=32, resampler_depth=1)), std=0.2)
    identity = torch.randn(1, 512, generator=g)
    expressions = expression_input(torch.rand(IMAGES, 52, generator=g), None, IMAGES)
    zero = sample(dit_adapter.install(model, adapter, identity, expressions, 0.0, 0.0), latent, conditioning)
    full_model, full_recorder = recorded(dit_adapter.install(model, adapter, identity, expressions, 1.0, 1.0))
    full = sample(full_model, latent, conditioning)
    result.update(adapter_sizes=sizes, adapter_zero_equal=torch.equal(zero, plain),
                  adapter_change=float((full - plain).abs().max()),
                  adapter_patched_blocks=len(adapter.after_double) + len(adapter.after_single),
                  adapter_reference_tokens_max_abs=float((full_recorder.outputs[0][:, tokens.reference_slice]
                                                          - first_plain[:, tokens.reference_slice]).abs().max()))
    return result, model


def qwen_parity(model) -> dict:
    """ComfyUI's Qwen-Image with the pack's adapter vs diffusers' Qwen-Image with the trainer's hooks."""
    from diffusers import QwenImageTransformer2DModel
    from genaffect.models.generation.dit_adapter import DiTAdapter, expression_input
    from genaffect.nodes.hosting import dit_adapter
    from genaffect.training.diffusers_host import DiffusersHost, adapter_config_for
    from tiny_dit import as_trained

    reference = QwenImageTransformer2DModel(in_channels=64, out_channels=16, num_layers=1).eval()
    state = {k: v.float() for k, v in model.model.diffusion_model.state_dict().items()}
    missing, unexpected = reference.load_state_dict(state, strict=False)
    torch.manual_seed(6)
    adapter = as_trained(DiTAdapter(adapter_config_for(reference, token_width=64, identity_tokens=4,
                                                       expression_tokens=4, heads=2, head_dim=32,
                                                       resampler_depth=1)).eval(), std=0.2)
    g = torch.Generator().manual_seed(8)
    identity = torch.randn(1, 512, generator=g)
    expression = expression_input(torch.rand(2, 52, generator=g), None, 2)
    patched = dit_adapter.install(model, adapter, identity, expression, 1.0, 0.7)
    x, ref = torch.randn(2, 16, 1, 8, 8, generator=g), torch.randn(2, 16, 1, 8, 8, generator=g)
    sigma = torch.full((2,), 0.6)
    text = torch.randn(2, TEXT, 3584, generator=g)

    def pack(latents):  # (B, C, 1, H, W) -> (B, H/2 * W/2, 4C), as QwenImagePipeline packs
        b, c, _, h, w = latents.shape
        return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // 4, c * 4)

    with torch.no_grad():
        options = {**patched.model_options["transformer_options"], "cond_or_uncond": [0], "sigmas": sigma[:1]}
        comfy_adapter = pack(patched.model.diffusion_model(x, sigma, context=text, ref_latents=[ref],
                                                           transformer_options=options))
        comfy_plain = pack(model.model.diffusion_model(x, sigma, context=text, ref_latents=[ref],
                                                       transformer_options={"cond_or_uncond": [0]}))

        def diffusers_forward():
            out = reference(hidden_states=torch.cat([pack(x), pack(ref)], dim=1), encoder_hidden_states=text,
                            encoder_hidden_states_mask=torch.ones(2, TEXT), timestep=sigma,
                            img_shapes=[[(1, 4, 4), (1, 4, 4)]] * 2, return_dict=False)[0]
            return out[:, :16]

        diffusers_plain = diffusers_forward()
        host = DiffusersHost(reference, adapter)
        host.condition(*adapter.encoder(identity.expand(2, -1), expression), 1.0, 0.7, generated_tokens=16)
        diffusers_adapter = diffusers_forward()
    return {
        "missing_keys": len(missing), "unexpected_keys": len(unexpected),
        "plain_max_abs": float((comfy_plain - diffusers_plain).abs().max()),
        "adapter_max_abs": float((comfy_adapter - diffusers_adapter).abs().max()),
        "adapter_effect": float((diffusers_adapter - diffusers_plain).abs().max()),
        "output_scale": float(diffusers_adapter.abs().max()),
    }


def pixelsmile_lora(model, scratch: str) -> dict:
    """A LoRA in PixelSmile's key layout through ComfyUI's own LoRA loading (LoraLoaderModelOnly's code): how
    many of its modules ComfyUI patches."""
    import comfy.sd
    import comfy.utils
    from editor_models import PIXELSMILE_MODULES
    from editor_models import pixelsmile_lora as lora_state
    from safetensors.torch import save_file

    import comfy.lora

    blocks = len(model.model.diffusion_model.transformer_blocks)
    path = os.path.join(scratch, "PixelSmile-like.safetensors")
    state = lora_state(blocks)
    save_file(state, path)
    patched, _ = comfy.sd.load_lora_for_models(model, None, comfy.utils.load_torch_file(path, safe_load=True), 1.0, 0)
    # how far each patched weight moves at strength 1 and 2, as a multiple of the file's B @ A (no alpha stored)
    scales = set()
    for key, patches in patched.patches.items():
        stem = "transformer." + key[len("diffusion_model."):-len(".weight")]
        down, up = ((state[f"{stem}.lora.down.weight"], state[f"{stem}.lora.up.weight"]) if f"{stem}.lora.down.weight"
                    in state else (state[f"{stem}.lora_A.weight"], state[f"{stem}.lora_B.weight"]))
        update = up.float() @ down.float()
        weight = torch.zeros_like(update)
        for strength in (1.0, 2.0):
            moved = comfy.lora.calculate_weight([(strength, *patches[0][1:])], weight.clone(), key) - weight
            scales.add((strength, round(float(moved.norm() / update.norm()), 3)))
    return {"modules": blocks * len(PIXELSMILE_MODULES), "patched": len(patched.patches),
            "unpatched_model_untouched": len(model.patches) == 0, "scales": sorted(scales)}


def qwen_padded_prompts(model) -> dict:
    """Two images whose prompts differ in length, stacked as the samplers stack them on Qwen-Image (zero
    padding and a padding mask): each image is as with its own prompt alone, with or without sharing."""
    from genaffect.models.generation.consistent_attention import ConsistencySettings
    from genaffect.nodes.hosting import consistent_attention
    from genaffect.nodes.sampling.set_sampler import latent_set

    g = torch.Generator().manual_seed(13)
    photo = [torch.randn(1, 16, 1, 8, 8, generator=g)]
    prompts = [[[torch.randn(1, length, 3584, generator=g), {"reference_latents": photo}]] for length in (5, 9)]
    latent = {"samples": torch.zeros(1, 16, 1, 8, 8)}
    samples, positive, negative = latent_set(latent, prompts, [[[torch.zeros(1, 5, 3584), {}]]], 2, text_mask=True)
    import comfy.sample

    noise = comfy.sample.prepare_noise(samples, 5)
    together = sample(model, samples, positive)
    alone = [sample(model, samples[i:i + 1], prompts[i], noise=noise[i:i + 1]) for i in range(2)]
    shared_model = consistent_attention.install(model, ConsistencySettings(rate=0.5, seed=3))
    shared = sample(shared_model, samples, positive)
    off = sample(consistent_attention.install(model, ConsistencySettings(rate=0.0, seed=3)), samples, positive)
    return {"mask": positive[0][1]["attention_mask"].tolist(),
            "padded_vs_alone_max_abs": max(float((together[i] - alone[i][0]).abs().max()) for i in range(2)),
            "rate0_equal": torch.equal(off, together), "shared_change": float((shared - together).abs().max()),
            "shared_finite": bool(torch.isfinite(shared).all())}


def main(scratch: str) -> dict:
    import comfy.options

    comfy.options.enable_args_parsing()
    from pack_loader import import_pack

    import_pack()
    results = {}
    for name, spec in comfy_models().items():
        results[name], model = family_checks(name, *spec, scratch)
        if name == "qwen_image":
            results["qwen_parity"] = qwen_parity(model)
            results["pixelsmile_lora"] = pixelsmile_lora(model, scratch)
            results["qwen_padded_prompts"] = qwen_padded_prompts(model)
        del model
    return results


if __name__ == "__main__":
    print(json.dumps(main(SCRATCH)))
