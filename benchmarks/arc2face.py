"""Adapter overhead per sampling step: SD1.5 UNet with the Expression Adapter (and with both adapters) /
the same UNet unpatched.

    python benchmarks/arc2face.py [--device cuda] [--size 256] [--repeats 5]

A full-size SD1.5 UNet (diffusers' UNet2DConditionModel, random weights: speed does not depend on
them) evaluated on a CFG batch of 2 (negative + positive) at ``--size`` pixels, as one sampling step
does. "adapter": every cross-attention layer runs our ``decoupled_cross_attention`` with the expression
keys/values of a full-size adapter (4 tokens of 768), computed once as the ComfyUI patch caches them;
"plain": diffusers' own attention processor. "reference": the expression adapter plus the Reference
Adapter's self-attention, every layer projecting own ++ bank tokens (a photo banked at the same size)
and the positive row attending to both (the LoRA is merged into the weights by ComfyUI: no step cost).
Runs alternate; medians are compared in one run. Target: adapter / plain <= 1.05 (no target for the
reference adapter, which doubles the self-attention keys by design). Writes
benchmarks/results/arc2face.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from face_analysis import import_pack, save_result

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)


class ExpressionProcessor:
    """A diffusers attention processor running our decoupled cross-attention with cached K/V."""

    def __init__(self, attention, k_ip, v_ip):
        self.attention, self.k_ip, self.v_ip = attention, k_ip, v_ip

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        q, k, v = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        out = self.attention(q, k, v, self.k_ip, self.v_ip, attn.heads, 1.0)
        return attn.to_out[1](attn.to_out[0](out))


class BankRecorder:
    """Self-attention processor of the bank pass: keep the layer's input (the block's norm1 output)."""

    def __init__(self, plain):
        self.plain, self.bank = plain, None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        self.bank = hidden_states[:1].clone()
        return self.plain(attn, hidden_states)


class ReferenceProcessor:
    """Self-attention reading the bank, hosted as ComfyUI hosts it (one projection of own ++ bank)."""

    def __init__(self, attention, bank, rows):
        self.attention, self.bank, self.rows = attention, bank, rows

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        extended = torch.cat([hidden_states, self.bank.expand(hidden_states.shape[0], -1, -1)], dim=1)
        q, k, v = attn.to_q(hidden_states), attn.to_k(extended), attn.to_v(extended)
        out = self.attention(q, k, v, hidden_states.shape[1], self.rows, attn.heads)
        return attn.to_out[1](attn.to_out[0](out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (latent = size / 8)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import_pack()
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from genaffect.models.generation.expression_adapter import (
        AdapterLayer,
        ExpressionAdapter,
        MLPProjection,
        decoupled_cross_attention,
        expression_rows,
    )
    from genaffect.models.generation.reference_adapter import bank_rows, reference_self_attention

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).to(device, dtype).eval()
    names = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    modules = dict(unet.named_modules())
    widths = [modules[n[: -len(".processor")]].to_k.out_features for n in names]
    adapter = ExpressionAdapter(MLPProjection(55, 110, 768, 4),
                                [AdapterLayer(2 * i + 1, w) for i, w in enumerate(widths)], 768).to(device, dtype)
    rows = expression_rows(torch.randn(1, 55), chunk_kinds=(1, 0), images=1)
    with torch.no_grad():
        tokens = adapter.tokens(rows)
        kv = [adapter.keys_values(i, tokens) for i in range(len(widths))]
    plain = {n: AttnProcessor2_0() for n in unet.attn_processors}
    ours = dict(plain)
    ours.update({n: ExpressionProcessor(decoupled_cross_attention, *kv[i]) for i, n in enumerate(names)})

    latent = args.size // 8
    x = torch.randn(2, 4, latent, latent, device=device, dtype=dtype)
    context = torch.randn(2, 77, 768, device=device, dtype=dtype)
    t = torch.tensor(500.0, device=device)

    recorders = {n: BankRecorder(AttnProcessor2_0()) for n in unet.attn_processors if n.endswith("attn1.processor")}
    unet.set_attn_processor({**plain, **recorders})
    with torch.no_grad():
        unet(x[:1], torch.tensor(0.0, device=device), encoder_hidden_states=context[:1])
    rows = bank_rows(1, chunk_kinds=(1, 0), images=1)
    reference = dict(ours)
    reference.update({n: ReferenceProcessor(reference_self_attention, r.bank, rows) for n, r in recorders.items()})

    def step(processors) -> float:
        unet.set_attn_processor(dict(processors))  # set_attn_processor consumes the dict it is given
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            unet(x, t, encoder_hidden_states=context)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    configurations = {"plain": plain, "adapter": ours, "reference": reference}
    for processors in configurations.values():  # warm-up
        step(processors)
    times = {name: [] for name in configurations}
    for _ in range(args.repeats):
        for name, processors in configurations.items():
            times[name].append(step(processors))
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["adapter"] / median["plain"]
    reference_ratio = median["reference"] / median["plain"]
    print(f"SD1.5 UNet, CFG batch 2, {args.size}x{args.size} ({latent}x{latent} latent), {dtype}, {device}, "
          f"{args.repeats} alternating repeats")
    print(f"plain {median['plain'] * 1000:.0f} ms/step   adapter {median['adapter'] * 1000:.0f} ms/step   "
          f"adapter/plain {ratio:.3f} (target <= 1.05)")
    print(f"both adapters {median['reference'] * 1000:.0f} ms/step   both/plain {reference_ratio:.3f}")
    save_result("arc2face", {"device": str(device), "dtype": str(dtype), "size": args.size, "repeats": args.repeats,
                             "median_s": median, "adapter_over_plain": ratio,
                             "both_adapters_over_plain": reference_ratio})


if __name__ == "__main__":
    main()
