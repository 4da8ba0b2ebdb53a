"""What one training step of the Gen-AFFECT adapter costs on a full-size backbone: parameters, memory of
the weights and optimiser state, and the FLOPs of one step, counted (not timed) with PyTorch's
FlopCounterMode on the meta device, so it runs in seconds on any CPU and needs no weights.

    python benchmarks/training_cost.py [--model flux2-klein-4b|flux2-klein-9b|qwen-image|flux1-dev]
                                       [--size 512] [--batch 4] [--setting edit|generate]

The transformer is diffusers' class with the published configuration of ``--model`` (the shapes of its
``transformer/config.json``; random weights would not change a count); the adapter is placed as the
family's record says with the default sizes the trainer uses. One step is what ``training/trainer.py``
does: the forward with gradient checkpointing (as the trainer enables it), the loss, and the backward,
which recomputes each block's forward and propagates through the frozen blocks to the adapter. In the
edit setting the reference photo's tokens (same size as the image) follow the generated ones.

Time is estimated from the FLOP count at 35 % of a GPU's dense bf16 peak (what diffusion-transformer
training usually reaches); a measured figure replaces it when a GPU is at hand. Writes
benchmarks/results/training_cost_<model>.json.
"""

from __future__ import annotations

import argparse

import torch
from face_analysis import import_pack, save_result

# diffusers transformer class, its published configuration, VAE pixels per latent side, text tokens
MODELS = {
    "flux2-klein-4b": ("Flux2Transformer2DModel", dict(
        patch_size=1, in_channels=128, num_layers=5, num_single_layers=20, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=7680, timestep_guidance_channels=256, mlp_ratio=3.0,
        axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, guidance_embeds=False), 16, 512),
    "flux2-klein-9b": ("Flux2Transformer2DModel", dict(
        patch_size=1, in_channels=128, num_layers=8, num_single_layers=24, attention_head_dim=128,
        num_attention_heads=32, joint_attention_dim=12288, timestep_guidance_channels=256, mlp_ratio=3.0,
        axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, guidance_embeds=False), 16, 512),
    "qwen-image": ("QwenImageTransformer2DModel", dict(
        patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=3584, axes_dims_rope=(16, 56, 56)), 8, 256),
    "flux1-dev": ("FluxTransformer2DModel", dict(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56)), 8, 512),
}
GPUS = {"H100 SXM (989 TFLOP/s bf16)": 989e12, "A100 (312)": 312e12, "L40S (362)": 362e12,
        "RTX 4090 (165)": 165e12}
UTILISATION = 0.35


def step_flops(transformer, family: str, batch: dict, adapter) -> tuple[int, int]:
    """(forward FLOPs, training-step FLOPs) of one batch through the trainer's loss."""
    from genaffect.training.trainer import FlowMatchingLoss
    from torch.utils.flop_counter import FlopCounterMode

    module = FlowMatchingLoss(adapter, transformer)
    noise, t = torch.randn_like(batch["latents"]), torch.full((batch["latents"].shape[0],), 0.5, device="meta")
    with FlopCounterMode(display=False) as forward:
        loss = module(batch, noise, t)
    with FlopCounterMode(display=False) as backward:  # incl. the checkpointed blocks' recomputed forward
        loss.backward()
    return forward.get_total_flops(), forward.get_total_flops() + backward.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="flux2-klein-4b")
    parser.add_argument("--size", type=int, default=512, help="training image side in pixels")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--setting", choices=("edit", "generate"), default="edit")
    args = parser.parse_args()

    import_pack()
    import diffusers
    from genaffect.models.generation.backbones import diffusers_family
    from genaffect.models.generation.dit_adapter import DiTAdapter, expression_input
    from genaffect.training.diffusers_host import adapter_config_for

    name, config, pixels_per_latent, text_tokens = MODELS[args.model]
    with torch.device("meta"):
        # nn.Module.to: ModelMixin.to warns about casting without from_pretrained (there is nothing to load)
        transformer = torch.nn.Module.to(getattr(diffusers, name)(**config), torch.bfloat16).requires_grad_(False)
        adapter = DiTAdapter(adapter_config_for(transformer, expression="both"))
    transformer.enable_gradient_checkpointing()
    record = diffusers_family(transformer)  # the family's record: its name, latent patch, text mask
    family, patch = record.name, record.patch_size
    channels = config["in_channels"] // patch ** 2
    side = args.size // pixels_per_latent  # the stored latents' side
    b = args.batch
    with torch.device("meta"):
        batch = {"latents": torch.empty(b, channels, side, side), "prompt_embeds": torch.empty(b, text_tokens,
                                                                                              config["joint_attention_dim"]),
                 "identity": torch.empty(b, 512), "expression": expression_input(torch.empty(b, 52), None, b)}
        if "pooled_projection_dim" in config:  # the transformer takes a pooled text vector
            batch["pooled_prompt_embeds"] = torch.empty(b, config["pooled_projection_dim"])
        if record.text_mask:
            batch["prompt_mask"] = torch.ones(b, text_tokens, dtype=torch.int64)
        if args.setting == "edit":
            batch["reference_latents"] = torch.empty_like(batch["latents"])
    forward, step = step_flops(transformer, family, batch, adapter)

    frozen = sum(p.numel() for p in transformer.parameters())
    trained = sum(p.numel() for p in adapter.parameters())
    image_tokens = (side // patch) ** 2
    gb = 1e9
    result = {
        "model": args.model, "setting": args.setting, "size": args.size, "batch": b,
        "tokens_per_image": {"text": text_tokens, "generated": image_tokens,
                             "reference": image_tokens if args.setting == "edit" else 0},
        "frozen_parameters": frozen, "adapter_parameters": trained,
        "frozen_weights_bf16_GB": round(frozen * 2 / gb, 2),
        # fp32 weights, gradients and AdamW's two moments
        "adapter_with_adam_fp32_GB": round(trained * 16 / gb, 2),
        "forward_TFLOP_per_image": round(forward / b / 1e12, 2),
        "step_TFLOP": round(step / 1e12, 1), "step_over_forward": round(step / forward, 2),
        "seconds_per_step_at_35pct": {gpu: round(step / (peak * UTILISATION), 2) for gpu, peak in GPUS.items()},
        "hours_for_20000_steps_at_35pct": {gpu: round(20000 * step / (peak * UTILISATION) / 3600, 1)
                                           for gpu, peak in GPUS.items()},
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    save_result(f"training_cost_{args.model}", result)


if __name__ == "__main__":
    main()
