"""Expression estimation overhead: GenAffectEstimateExpression vs MediaPipe's FaceLandmarker.detect, one run.

    python benchmarks/expression.py --models-dir PATH/models [--images N] [--repeats R]

Needs PATH/models/mediapipe/face_landmarker.task (a user download; the benchmark stops with a message
without it). Both sides use the same landmarker object and the same decoded images (the astronaut,
rotated, shifted and mirrored for variety). The node's time includes everything a ComfyUI run pays:
IMAGE tensor -> RGB uint8, MediaPipe, conversion of the results, face choice, the preview drawing and
the report (and again with ``draw_preview`` off, which leaves out the drawing and its float copy);
MediaPipe's is wrapping each RGB array in an ``mp.Image`` and calling ``detect``. SMIRK is left out (the direct call has no
equivalent). Runs alternate (the order reversed every other round); the ratio of medians is printed (target <= 1.10)
and written to benchmarks/results/expression.json, for wall time and for the process's CPU time (MediaPipe's threads
included), which other work on a shared machine disturbs less.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

import numpy as np
from face_analysis import import_pack, save_result


def benchmark_images(count: int, size: int = 512) -> list[np.ndarray]:
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    if size != 512:  # a camera photo's size: MediaPipe's work stays the same, the pack's grows with the pixels
        photo = photo.resize((size, size), Image.BICUBIC)
    frames = []
    for i in range(count):
        frame = np.asarray(photo.rotate(4 * (i - count // 2), center=(225 * size // 512, 120 * size // 512)))
        frame = np.roll(frame if i % 2 == 0 else frame[:, ::-1], 8 * i * size // 512, axis=1)
        frames.append(np.ascontiguousarray(frame))
    return frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="a ComfyUI models folder with mediapipe/face_landmarker.task")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--size", type=int, default=512, help="the photos' side in pixels (the astronaut, resized)")
    args = parser.parse_args()

    task = os.path.join(args.models_dir, "mediapipe", "face_landmarker.task")
    if not os.path.isfile(task):
        print(f"no {task}: download face_landmarker.task into models/mediapipe/ to run this benchmark (see docs/models.md).")
        return 2

    import mediapipe as mp
    import torch

    logging.getLogger("genaffect").setLevel(logging.ERROR)
    import_pack()
    from genaffect.models.expression import expression_estimator
    from genaffect.nodes.estimation_nodes import GenAffectEstimateExpression

    estimator = expression_estimator.load_estimator(task)
    frames = benchmark_images(args.images, args.size)
    tensor = torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)
    node = GenAffectEstimateExpression()

    def run_ours():
        node.estimate(tensor, "largest", 0, "skip", estimator=estimator)

    def run_ours_undrawn():
        node.estimate(tensor, "largest", 0, "skip", estimator=estimator, draw_preview=False)

    def run_theirs():
        for frame in frames:
            estimator.landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame))

    faces = sum(len(estimator.landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=f)).face_landmarks) for f in frames)
    run_ours()  # warm-up
    sides = [("genaffect", run_ours), ("genaffect_no_preview", run_ours_undrawn), ("mediapipe", run_theirs)]
    times = {name: [] for name, _ in sides}
    cpu = {name: [] for name, _ in sides}
    for repeat in range(args.repeats):
        for name, fn in sides if repeat % 2 == 0 else sides[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    estimator.close()

    median = {k: statistics.median(v) for k, v in times.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    ratio = median["genaffect"] / median["mediapipe"]
    best_ratio = min(times["genaffect"]) / min(times["mediapipe"])
    ratio_undrawn = median["genaffect_no_preview"] / median["mediapipe"]
    result = {
        "images": args.images,
        "image_size": list(frames[0].shape[:2]),
        "faces_found_by_mediapipe": faces,
        "repeats": args.repeats,
        "median_seconds": median,
        "ratio_median": round(ratio, 3),
        "ratio_best": round(best_ratio, 3),
        "ratio_median_no_preview": round(ratio_undrawn, 3),
        "median_cpu_seconds": median_cpu,
        "cpu_ratio_median": round(median_cpu["genaffect"] / median_cpu["mediapipe"], 3),
        "cpu_ratio_median_no_preview": round(median_cpu["genaffect_no_preview"] / median_cpu["mediapipe"], 3),
        "load_average": os.getloadavg()[0],
        "target": 1.10,
    }
    print(f"expression estimation, {args.images} images of {frames[0].shape[1]}x{frames[0].shape[0]}, "
          f"{args.repeats} alternating runs, {faces} faces found")
    print(f"  GenAffectEstimateExpression  median {median['genaffect'] * 1000:8.1f} ms")
    print(f"  ... with draw_preview off    median {median['genaffect_no_preview'] * 1000:8.1f} ms")
    print(f"  FaceLandmarker.detect        median {median['mediapipe'] * 1000:8.1f} ms")
    print(f"  ratio (median) {ratio:.3f}   ratio (best) {best_ratio:.3f}   "
          f"without preview {ratio_undrawn:.3f}   target <= 1.10")
    print(f"  CPU time: ratio (median) {result['cpu_ratio_median']:.3f}   without preview "
          f"{result['cpu_ratio_median_no_preview']:.3f}   (load average {result['load_average']:.1f})")
    save_result("expression", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
