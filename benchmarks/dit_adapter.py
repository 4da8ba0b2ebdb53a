"""DiT adapter overhead per sampling step: a FLUX or Qwen-Image transformer with the Gen-AFFECT DiT adapter /
the same transformer unpatched.

    python benchmarks/dit_adapter.py [--family flux|qwen_image] [--device cuda] [--double N] [--single N]
                                     [--size 512] [--text-tokens 512] [--repeats 5]

``--family qwen_image``: diffusers' QwenImageTransformer2DModel at Qwen-Image's width (3072, 24 heads of
128, text width 3584) with ``--double`` blocks (CPU default 6, adapter after blocks 0 and 3: Qwen-Image's
share, 20 of 60; GPU default 60 in bf16), one 512-token prompt, the image packed 2x2 like FLUX's. The rest
of this text describes the FLUX default.

diffusers' FluxTransformer2DModel at FLUX.1-dev's width (3072, 24 heads of 128, T5 width 4096, guidance
embedding), random weights (speed does not depend on them), built on the meta device and filled in place.
On the CPU (fp32) it has ``--double`` 4 / ``--single`` 8 blocks, which keeps FLUX.1's share of patched
blocks (adapter after double 0, 2 and single 0, 4: 4 of 12 blocks; FLUX.1: 20 of 57); with
``--device cuda`` the defaults are full FLUX.1 (19 double, 38 single) in bf16. One step is batch 1 (FLUX
samples with cfg 1 and distilled guidance) at ``--size`` pixels (512: a 64x64 latent packed 2x2 into 1024
image tokens) with ``--text-tokens`` T5 tokens (512, FLUX.1-dev's maximum), ids as the FLUX pipeline
builds them. "adapter": DiffusersHost's forward hooks add the residual cross-attention of a full-size
adapter (default token sizes: 16 identity + 8 expression tokens of 2048, 16 heads of 64; non-zero
output projections), both strengths 1.0, on identity and expression tokens computed once before timing
as the ComfyUI patch caches them; "plain": no hooks. Runs alternate after one warm-up each (counted with
FlopCounterMode for the FLOP share) in ABBA order; medians (and minima) are compared in one run.
Target: adapter / plain <= 1.03. About 5 minutes on an idle 2-core CPU; other load on the machine
shows up as noise in the ratio, so run it alone. Writes benchmarks/results/dit_adapter_<family>.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from face_analysis import import_pack, save_result

FLUX_DEV = dict(patch_size=1, in_channels=64, attention_head_dim=128, num_attention_heads=24,
                joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
QWEN_IMAGE = dict(patch_size=2, in_channels=64, out_channels=16, attention_head_dim=128, num_attention_heads=24,
                  joint_attention_dim=3584, axes_dims_rope=(16, 56, 56))


def fill_randomly(transformer, device: torch.device, dtype: torch.dtype):
    """Materialise a meta-device transformer with fan-in scaled random weights."""
    # nn.Module.to: ModelMixin.to warns about casting without from_pretrained (there is nothing to load)
    transformer = torch.nn.Module.to(transformer, dtype).to_empty(device=device).eval()
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if parameter.dim() >= 2:  # fan-in scaled, so activations stay finite through the blocks
                parameter.normal_(0.0, parameter.shape[1] ** -0.5, generator=generator)
            elif name.endswith("bias"):
                parameter.zero_()
            else:  # the q/k RMSNorm scales
                parameter.fill_(1.0)
    return transformer


FULL_WIDTH = {"flux": FLUX_DEV, "qwen_image": QWEN_IMAGE}  # family -> its published configuration


def random_transformer(family: str, double: int, single: int, device: torch.device, dtype: torch.dtype):
    """A full-width transformer of the family's diffusers class (its record's), built without an initialisation pass,
    then filled with sane random values."""
    import diffusers
    from genaffect.models.generation.backbones import family as family_record

    record = family_record(family)
    blocks = {"num_layers": double, **({"num_single_layers": single} if record.diffusers_single else {})}
    with torch.device("meta"):
        transformer = getattr(diffusers, record.diffusers_class)(**blocks, **FULL_WIDTH[family])
    transformer = fill_randomly(transformer, device, dtype)
    if family == "qwen_image":  # its RoPE tables are plain tensors made at construction: make them for real
        transformer.pos_embed = type(transformer.pos_embed)(theta=10000, axes_dim=list(QWEN_IMAGE["axes_dims_rope"]),
                                                            scale_rope=True)
    return transformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="flux", choices=sorted(FULL_WIDTH))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--double", type=int, help="double blocks (default: FLUX 4 / Qwen-Image 6 on CPU, "
                                                   "FLUX.1's 19 / Qwen-Image's 60 on GPU)")
    parser.add_argument("--single", type=int, help="single blocks (default: 8 on CPU, FLUX.1's 38 on GPU)")
    parser.add_argument("--size", type=int, default=512, help="image size in pixels (latent = size / 8, packed 2x2)")
    parser.add_argument("--text-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, help="alternating timed runs (default: 5 on CPU, 10 on GPU)")
    args = parser.parse_args()
    import_pack()
    from genaffect.models.generation.dit_adapter import DiTAdapter, expression_input
    from genaffect.training.diffusers_host import DiffusersHost, adapter_config_for
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    qwen = args.family == "qwen_image"
    double = args.double if args.double is not None else {(False, False): 4, (False, True): 19,
                                                          (True, False): 6, (True, True): 60}[(qwen, gpu)]
    single = 0 if qwen else args.single if args.single is not None else (38 if gpu else 8)
    repeats = args.repeats or (10 if gpu else 5)

    start = time.perf_counter()
    transformer = random_transformer(args.family, double, single, device, dtype)
    torch.manual_seed(0)
    adapter = DiTAdapter(adapter_config_for(transformer)).eval()
    with torch.no_grad():
        for module in [*adapter.after_double.values(), *adapter.after_single.values()]:
            torch.nn.init.normal_(module.to_out.weight, 0.0, 0.1 * module.to_out.in_features ** -0.5)
        identity_tokens, expression_tokens = adapter.encoder(torch.randn(1, 512),
                                                             expression_input(torch.rand(1, 52), None, 1))
    adapter = adapter.to(device, dtype)
    identity_tokens, expression_tokens = identity_tokens.to(device, dtype), expression_tokens.to(device, dtype)
    build_s = time.perf_counter() - start
    config = adapter.config
    residual_parameters = sum(p.numel() for name, p in adapter.named_parameters() if not name.startswith("encoder."))
    encoder_parameters = sum(p.numel() for p in adapter.encoder.parameters())

    latent = args.size // 8
    side = latent // 2  # FLUX packs 2x2 latent patches into one token
    image_tokens = side * side
    img_ids = torch.zeros(side, side, 3)
    img_ids[..., 1] += torch.arange(side)[:, None]
    img_ids[..., 2] += torch.arange(side)[None, :]
    inputs = dict(
        hidden_states=torch.randn(1, image_tokens, 64, device=device, dtype=dtype),
        encoder_hidden_states=torch.randn(1, args.text_tokens, 3584, device=device, dtype=dtype),
        encoder_hidden_states_mask=torch.ones(1, args.text_tokens, device=device),
        timestep=torch.tensor([0.5], device=device, dtype=dtype), img_shapes=[[(1, side, side)]],
        return_dict=False,
    ) if qwen else dict(
        hidden_states=torch.randn(1, image_tokens, 64, device=device, dtype=dtype),
        encoder_hidden_states=torch.randn(1, args.text_tokens, 4096, device=device, dtype=dtype),
        pooled_projections=torch.randn(1, 768, device=device, dtype=dtype),
        timestep=torch.tensor([0.5], device=device, dtype=dtype),  # the pipeline passes t / 1000
        guidance=torch.tensor([3.5], device=device, dtype=dtype),
        img_ids=img_ids.reshape(-1, 3).to(device, dtype),
        txt_ids=torch.zeros(args.text_tokens, 3, device=device, dtype=dtype),
        return_dict=False,
    )

    def step(name: str, counter=None) -> float:
        host = None
        if name == "adapter":
            host = DiffusersHost(transformer, adapter)
            host.condition(identity_tokens, expression_tokens, 1.0, 1.0)
        if gpu:
            torch.cuda.synchronize()
        began = time.perf_counter()
        with torch.inference_mode():
            if counter is None:
                out = transformer(**inputs)[0]
            else:
                with counter:
                    out = transformer(**inputs)[0]
        if gpu:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - began
        if host is not None:
            host.remove()
        if not torch.isfinite(out).all():
            raise RuntimeError(f"the {name} step produced non-finite values; the random weights are not sane")
        return elapsed

    names = ("plain", "adapter")
    flops = {}
    for name in names:  # warm-up, counting FLOPs
        counter = FlopCounterMode(display=False)
        step(name, counter)
        flops[name] = counter.get_total_flops()
    flop_share = flops["adapter"] / flops["plain"] - 1
    times = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:  # ABBA: drift favours neither side
            times[name].append(step(name))
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["adapter"] / median["plain"]
    best_ratio = min(times["adapter"]) / min(times["plain"])
    patched = len(config.double_positions) + len(config.single_positions)
    print(f"{args.family} width 3072, {double} double + {single} single blocks (adapter after {patched}), "
          f"{args.size}x{args.size} ({image_tokens} image + {args.text_tokens} text tokens), batch 1, {dtype}, "
          f"{device}, {repeats} alternating repeats (built in {build_s:.0f} s)")
    print(f"adapter: {residual_parameters / 1e6:.1f} M step parameters (+ {encoder_parameters / 1e6:.1f} M encoder, "
          f"run once), {config.identity_tokens} + {config.expression_tokens} tokens; "
          f"FLOPs +{flop_share * 100:.2f}%")
    print(f"plain {median['plain'] * 1000:.0f} ms/step   adapter {median['adapter'] * 1000:.0f} ms/step   "
          f"adapter/plain {ratio:.3f} (best {best_ratio:.3f}; target <= 1.03)")
    save_result(f"dit_adapter_{args.family}", {
        "family": args.family, "device": str(device), "dtype": str(dtype), "hidden_size": config.hidden_size,
        "double_blocks": double, "single_blocks": single, "patched_blocks": patched,
        "size": args.size, "image_tokens": image_tokens, "text_tokens": args.text_tokens,
        "identity_tokens": config.identity_tokens, "expression_tokens": config.expression_tokens,
        "adapter_step_parameters": residual_parameters, "adapter_encoder_parameters": encoder_parameters,
        "flops": flops, "flop_share": flop_share, "repeats": repeats, "times_s": times, "median_s": median,
        "adapter_over_plain": ratio, "adapter_over_plain_best": best_ratio, "target": 1.03,
    })


if __name__ == "__main__":
    main()
