"""Identity extraction overhead: GenAffectExtractIdentity vs insightface's FaceAnalysis.get, one run.

    python benchmarks/face_analysis.py [--pack DIR] [--images N] [--repeats R]

Both sides get the same images (already decoded) and the same detector and recognizer files,
on the CPU provider. The node's time includes everything a ComfyUI run pays: tensor -> uint8 BGR,
detection, face choice, alignment, embedding, aggregation, the crops and the preview drawing.
FaceAnalysis.get is timed on the uint8 BGR arrays it wants.

Without --pack it builds models with insightface's real signatures and a realistic amount of
convolution (about SCRFD-10G at 640 px and glintr100 at 112 px) from tests/tiny_insightface.py;
with --pack (a real antelopev2 folder) it uses those. Runs alternate between the two sides and the
ratio of medians is printed (target <= 1.10) and written to benchmarks/results/face_analysis.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "support"))
sys.path.insert(0, os.path.join(REPO, "tools"))
from pack_loader import import_pack  # noqa: E402,F401  (the benchmarks import it from here)


def save_result(name: str, result: dict) -> None:
    """benchmarks/results/<name>.json (not committed)."""
    os.makedirs(os.path.join(REPO, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(REPO, "benchmarks", "results", f"{name}.json"), "w") as handle:
        json.dump(result, handle, indent=2)


def benchmark_images(count: int, size: int, real_pack: bool) -> list[np.ndarray]:
    if real_pack:  # the real detector needs a real face: the astronaut, shifted and flipped for variety
        from skimage import data

        photo = np.asarray(data.astronaut())
        frames = [np.roll(photo if i % 2 == 0 else photo[:, ::-1], 8 * i, axis=1) for i in range(count)]
        return [np.ascontiguousarray(f) for f in frames]
    from tiny_insightface import faces_image

    return [faces_image(dict(cx=size // 2 - 8 * i, cy=size // 2, half=48, identity=1), height=size, width=size) for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", help="a real insightface pack folder (e.g. .../models/insightface/models/antelopev2)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=640)
    args = parser.parse_args()

    import logging

    import torch
    from insightface.app import FaceAnalysis

    logging.getLogger("genaffect").setLevel(logging.ERROR)  # per-run skip/outlier notes are not timed output

    import_pack()
    from genaffect.models.face import face_analyzer
    from genaffect.models.files import onnx_providers
    from genaffect.nodes.face_nodes import GenAffectExtractIdentity

    with tempfile.TemporaryDirectory() as scratch:
        if args.pack:
            pack_dir, kind = os.path.abspath(args.pack), "real pack"
        else:
            from tiny_insightface import write_pack

            pack_dir = write_pack(os.path.join(scratch, "insightface"), realistic_cost=True, with_landmarker=False)
            kind = "synthetic models of realistic cost"
        frames = benchmark_images(args.images, args.size, real_pack=bool(args.pack))
        tensor = torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)
        bgr_frames = [np.ascontiguousarray(f[..., ::-1]) for f in frames]

        ours = face_analyzer.load_face_analyzer(
            "bench", pack_dir, onnx_providers.choose_providers("CPU"), det_size=args.size
        )
        theirs = FaceAnalysis(name=pack_dir, allowed_modules=["detection", "recognition"], providers=["CPUExecutionProvider"])
        theirs.prepare(ctx_id=-1, det_size=(args.size, args.size))
        node = GenAffectExtractIdentity()

        def run_ours():
            node.extract(ours, tensor, "largest", 0, "skip")

        def run_theirs():
            for bgr in bgr_frames:
                theirs.get(bgr)

        faces_theirs = sum(len(theirs.get(bgr)) for bgr in bgr_frames)
        run_ours()  # warm-up: sessions for this input size, caches
        times = {"genaffect": [], "insightface": []}
        for _ in range(args.repeats):
            for name, fn in (("genaffect", run_ours), ("insightface", run_theirs)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)

    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["genaffect"] / median["insightface"]
    best_ratio = min(times["genaffect"]) / min(times["insightface"])
    result = {
        "models": kind,
        "images": args.images,
        "image_size": args.size,
        "faces_found_by_insightface": faces_theirs,
        "repeats": args.repeats,
        "median_seconds": median,
        "ratio_median": round(ratio, 3),
        "ratio_best": round(best_ratio, 3),
        "target": 1.10,
    }
    print(f"face analysis, {args.images} images of {args.size}px, {kind}, {args.repeats} alternating runs")
    print(f"  GenAffectExtractIdentity  median {median['genaffect'] * 1000:8.1f} ms")
    print(f"  FaceAnalysis.get          median {median['insightface'] * 1000:8.1f} ms")
    print(f"  ratio (median) {ratio:.3f}   ratio (best) {best_ratio:.3f}   target <= 1.10")
    save_result("face_analysis", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
