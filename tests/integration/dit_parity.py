"""The Gen-AFFECT adapter on ComfyUI's FLUX against the same adapter hooked into diffusers' FLUX.

Run with ComfyUI's Python from the ComfyUI folder: ``python dit_parity.py <scratch dir>``; prints JSON.
A tiny FLUX.1-layout FluxTransformer2DModel (random weights, 2 double / 4 single blocks, ComfyUI's
head size 128 so its detection reads the layout) is saved in diffusers' layout and loaded by ComfyUI's
own ``load_diffusion_model`` (which converts the keys); the adapter is installed by the pack's
``nodes.hosting.dit_adapter.install`` as the Apply DiT Adapter node does, and ComfyUI's FLUX forward runs with the
block replacements. diffusers runs the same weights with the adapter's forward hooks
(training/diffusers_host.py) on the same latents, time, text, pooled vector and guidance.
"""

from __future__ import annotations

import json
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [os.getcwd(), os.path.join(REPO, "tools"), os.path.join(REPO, "tests", "support")]  # ComfyUI, helpers
SCRATCH = sys.argv[-1]
sys.argv = [sys.argv[0], "--cpu"]  # what ComfyUI's argument parser sees


def main(scratch: str) -> dict:
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.sd
    from diffusers import FluxTransformer2DModel
    from pack_loader import import_pack
    from safetensors.torch import save_file
    from tiny_dit import as_trained

    import_pack()
    from genaffect.models.generation.dit_adapter import DiTAdapter, expression_input
    from genaffect.nodes.hosting import dit_adapter
    from genaffect.training.latent_packing import grid_ids, pack
    from genaffect.training.diffusers_host import DiffusersHost, adapter_config_for

    torch.manual_seed(0)
    reference = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4,
                                       attention_head_dim=128, num_attention_heads=2, joint_attention_dim=64,
                                       pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(16, 56, 56)).eval()
    path = os.path.join(scratch, "tiny_flux_diffusers.safetensors")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    model = comfy.sd.load_diffusion_model(path, model_options={"dtype": torch.float32})

    adapter = DiTAdapter(adapter_config_for(reference, token_width=64, identity_tokens=4, expression_tokens=4, heads=2,
                                            head_dim=32, resampler_depth=1)).eval()
    as_trained(adapter)
    g = torch.Generator().manual_seed(1)
    identity = torch.randn(1, 512, generator=g)
    expression = expression_input(torch.rand(2, 52, generator=g), None, 2)
    patched = dit_adapter.install(model, adapter, identity, expression, 1.0, 0.7)

    x = torch.randn(2, 16, 8, 8, generator=g)
    sigma = torch.full((2,), 0.6)
    text, pooled = torch.randn(2, 6, 64, generator=g), torch.randn(2, 32, generator=g)
    guidance = torch.full((2,), 3.5)
    options = {**patched.model_options["transformer_options"], "cond_or_uncond": [0], "sigmas": sigma[:1]}
    flux = patched.model.diffusion_model
    with torch.no_grad():
        comfy_adapter = flux(x, sigma, context=text, y=pooled, guidance=guidance, transformer_options=options)
        comfy_plain = model.model.diffusion_model(x, sigma, context=text, y=pooled, guidance=guidance,
                                                  transformer_options={"cond_or_uncond": [0], "sigmas": sigma[:1]})

        def diffusers_forward():
            out = reference(hidden_states=pack(x, 2), timestep=sigma, guidance=guidance, pooled_projections=pooled,
                            encoder_hidden_states=text, txt_ids=torch.zeros(6, 3), img_ids=grid_ids(4, 4, 0, 3, "cpu"),
                            return_dict=False)[0]
            return out.view(2, 4, 4, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(2, 16, 8, 8)

        diffusers_plain = diffusers_forward()
        host = DiffusersHost(reference, adapter)
        identity_tokens, expression_tokens = adapter.encoder(identity.expand(2, -1), expression)
        host.condition(identity_tokens, expression_tokens, 1.0, 0.7)
        diffusers_adapter = diffusers_forward()
    return {
        "adapter_max_abs": float((comfy_adapter - diffusers_adapter).abs().max()),
        "plain_max_abs": float((comfy_plain - diffusers_plain).abs().max()),
        "adapter_effect": float((diffusers_adapter - diffusers_plain).abs().max()),
        "output_scale": float(diffusers_adapter.abs().max()),
        "patched_blocks": sorted(str(k) for k in options["patches_replace"]["dit"]),
    }


if __name__ == "__main__":
    print(json.dumps(main(SCRATCH)))
