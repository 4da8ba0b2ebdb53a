"""Consistent attention cost: ours vs plain attention, the FLOP floor and StoryDiffusion's dense mask, one run.

    python benchmarks/consistent_attention.py [--geometry flux|qwen_edit] [--device cuda] [--heads 24]
                                              [--images 1 2 4 8 16] [--rates 0.25 0.5 1] [--anchors 0 2]
                                              [--repeats 3]

Geometries (one chunk, cond only): ``flux``, 24 heads x 128, 512 text + 1024 image tokens (FLUX.1 at
512x512); ``qwen_edit``, 24 heads x 128, 512 text + 4096 generated + 4096 reference-image tokens
(Qwen-Image-Edit at 1024x1024 with one photo: the reference tokens are neither borrowed nor borrow).
For each set size N, rate r and anchor count a it times, in alternating runs:
- plain: the host's attention on the N sequences, no sharing (what the unpatched model does);
- ours: ``consistent_attention`` (per-image calls to the same attention, borrowed keys appended);
- dense: the peer, StoryDiffusion's formulation: the N sequences concatenated into one, with an
  (N x L)^2 boolean mask that allows own tokens and the same borrowed tokens (mask built outside
  the timing, as StoryDiffusion builds it once per step).
Both share exactly the same tokens. Reported: time / plain, time / FLOP floor (plain x (1 + r(N-1)),
or plain x (1 + r a) with anchors; and against the exact multiply-add count, in which only the
generated-image queries get the borrowed keys), and the extra peak memory above the inputs (CUDA: allocator
peak; CPU: the process's peak RSS, measured in a forked child). Targets at N=8, r=0.5: ours >= 2x
faster than dense, <= 1/3 of its extra memory, within 1.3x of the floor. Prints a table and writes
benchmarks/results/consistent_attention_<geometry>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from face_analysis import import_pack, save_result

HEAD_DIM = 128
GEOMETRIES = {  # text, generated image, reference image tokens
    "flux": (512, 1024, 0),
    "qwen_edit": (512, 4096, 4096),
}


def dense_mask_attention(q, k, v, images, plan, image_tokens):
    """StoryDiffusion's dense formulation for one chunk: one sequence of N x L tokens and a mask."""
    _, heads, length, dim = q.shape
    mask = dense_mask(images, length, plan, image_tokens, q.device)

    def run():
        joined = [t.transpose(0, 1).reshape(1, heads, images * length, dim) for t in (q, k, v)]
        out = F.scaled_dot_product_attention(*joined, attn_mask=mask)
        return out.reshape(heads, images, length, dim).transpose(0, 1)

    return run


def dense_mask(images, length, plan, image_tokens, device):
    allowed = torch.zeros(images * length, images * length, dtype=torch.bool)
    receiving = torch.arange(length)[image_tokens]
    for i in range(images):
        allowed[i * length:(i + 1) * length, i * length:(i + 1) * length] = True
        for j, positions in plan[0][i]:
            allowed[(i * length + receiving).unsqueeze(1), (j * length + positions).unsqueeze(0)] = True
    return allowed.to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def cuda_extra_peak_mb(fn) -> float:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def cpu_extra_peak_mb(kind: str, images: int, rate: float, anchors: int, args) -> float:
    """The call in a fresh process (OpenMP makes fork unsafe): its peak RSS above the resident inputs."""
    command = [sys.executable, os.path.abspath(__file__), "--memory-of", kind, "--images", str(images),
               "--rates", str(rate), "--anchors", str(anchors), "--heads", str(args.heads), "--dtype", args.dtype,
               "--geometry", args.geometry]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def measure_own_memory(kind: str, runs: dict) -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak to the current RSS
    before = _rss_kib("VmRSS")
    runs[kind]()
    print((_rss_kib("VmHWM") - before) / 1024)


def setup(images, heads, rate, anchors, device, dtype, geometry, dense=True):
    """Inputs, the shared plan and the three ways to run them."""
    from genaffect.models.generation.backbones import TokenLayout
    from genaffect.models.generation.consistent_attention import (
        Sharing,
        choose_borrowed,
        consistent_attention,
        make_generator,
    )

    tokens = TokenLayout(*GEOMETRIES[geometry])
    image_tokens = tokens.generated_slice
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(images, heads, tokens.length, HEAD_DIM, generator=generator).to(device, dtype) for _ in range(3))
    sharing = Sharing(rate, image_tokens, anchors)
    plan = choose_borrowed(sharing, images, 1, tokens.generated, make_generator(0, 0))
    plan = [[[(j, p.to(device)) for j, p in pairs] for pairs in chunk] for chunk in plan]
    runs = {
        "plain": lambda: F.scaled_dot_product_attention(q, k, v),
        "ours": lambda: consistent_attention(q, k, v, images=images, sharing=sharing, plan=plan),
    }
    if images > 1 and dense:
        runs["dense"] = dense_mask_attention(q, k, v, images, plan, image_tokens)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--geometry", default="flux", choices=list(GEOMETRIES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--images", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--anchors", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--no-dense", action="store_true", help="skip the dense-mask peer (slow at large N on CPU)")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: one CPU memory measurement
    args = parser.parse_args()

    import_pack()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.memory_of:
        runs = setup(args.images[0], args.heads, args.rates[0], args.anchors[0], device, dtype, args.geometry)
        measure_own_memory(args.memory_of, runs)
        return 0
    rows = []
    text, generated, references = GEOMETRIES[args.geometry]
    length = text + generated + references
    print(f"{args.geometry}: {args.heads} heads x {HEAD_DIM}, {text} text + {generated} generated + {references} "
          f"reference image tokens, {args.dtype} on {device}")
    print(f"{'N':>3} {'r':>5} {'a':>2} | {'plain ms':>9} {'ours/plain':>10} {'ours/floor':>10} {'ours/exact':>10} {'dense/plain':>11} "
          f"{'dense/ours':>10} | {'ours MB':>8} {'dense MB':>9} {'ours/dense mem':>14}")
    for images in args.images:
        for anchors in args.anchors:
            if anchors > images:
                continue
            for rate in args.rates:
                runs = setup(images, args.heads, rate, anchors, device, dtype, args.geometry, dense=not args.no_dense)
                if "dense" in runs:
                    check = (runs["dense"]().float() - runs["ours"]().float()).abs().max().item()
                    assert check < 1e-2, f"dense and ours disagree by {check}"
                for fn in runs.values():  # warm-up
                    fn()
                times = {name: [] for name in runs}
                for _ in range(args.repeats):
                    for name, fn in runs.items():
                        times[name].append(timed(fn, device))
                median = {name: statistics.median(values) for name, values in times.items()}
                memory = {name: cuda_extra_peak_mb(fn) if device.type == "cuda" else
                          cpu_extra_peak_mb(name, images, rate, anchors, args) for name, fn in runs.items()}
                donors = (anchors if anchors else images - 1) if images > 1 else 0
                floor = 1 + rate * donors
                # The same count of multiply-adds, exactly: only generated-image queries get the borrowed keys.
                exact = 1 + (generated / length) * (round(rate * generated) * donors / length)
                row = {
                    "images": images, "rate": rate, "anchors": anchors, "plain_ms": 1e3 * median["plain"],
                    "ours_over_plain": median["ours"] / median["plain"],
                    "ours_over_floor": median["ours"] / (median["plain"] * floor),
                    "ours_over_exact_flops": median["ours"] / (median["plain"] * exact),
                    "ours_extra_mb": memory["ours"], "plain_extra_mb": memory["plain"],
                }
                if "dense" in runs:
                    row.update(dense_over_plain=median["dense"] / median["plain"],
                               dense_over_ours=median["dense"] / median["ours"], dense_extra_mb=memory["dense"],
                               ours_over_dense_memory=memory["ours"] / memory["dense"])
                rows.append(row)
                dense = (f"{row['dense_over_plain']:>11.2f} {row['dense_over_ours']:>10.2f}" if "dense" in runs
                         else f"{'-':>11} {'-':>10}")
                dense_mb = (f"{row['dense_extra_mb']:>9.0f} {row['ours_over_dense_memory']:>14.2f}" if "dense" in runs
                            else f"{'-':>9} {'-':>14}")
                print(f"{images:>3} {rate:>5} {anchors:>2} | {row['plain_ms']:>9.1f} {row['ours_over_plain']:>10.2f} "
                      f"{row['ours_over_floor']:>10.2f} {row['ours_over_exact_flops']:>10.2f} {dense} | {row['ours_extra_mb']:>8.0f} {dense_mb}", flush=True)
                if images == 1:
                    break  # nothing is shared: one rate says it all
    save_result(f"consistent_attention_{args.geometry}", {
        "device": str(device), "dtype": args.dtype, "geometry": args.geometry, "heads": args.heads,
        "head_dim": HEAD_DIM, "text_tokens": text, "image_tokens": generated, "reference_tokens": references,
        "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
