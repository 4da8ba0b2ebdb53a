"""Score a folder of generated faces named by their target expression, in the manner of PixelSmile's FFE-Bench. Run
from the pack's folder::

    python -m models.score_expressions --folder OUT/ --reference photo.png --models-dir ComfyUI/models \
        [--pack antelopev2] [--network facial_expression_recognition_mobilefacenet_2022july.onnx] \
        [--held-out other.png ...] [--json score.json] [--chart score.png]

Each image is named by its target: a folder per target (``OUT/happy/001.png``) or the start of its file name
(``happy_001.png``); targets are PixelSmile's 12 categories, GenAffect's class names or library presets. The
reference photo gives the identity and the expression each face is judged relative to. Writes the scores as JSON
and a chart (the confusion matrix); prints the summary. What the numbers mean: models/evaluation/expression_score.py.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

from .drawing.pictures import draw_confusion_chart
from .evaluation import expression_score, face_metrics
from .expression.expression_estimator import estimate_expressions, load_estimator
from .expression.expression_network import load_expression_network
from .face.face_analyzer import load_face_analyzer
from .face.identity import extract_identity
from .files.onnx_providers import choose_providers

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_rgb(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def named_images(folder: str) -> tuple[list[str], list[str], list[str]]:
    """(paths, targets, the files no target names) of the images under ``folder``."""
    paths, targets, unnamed = [], [], []
    for directory, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            relative = os.path.relpath(os.path.join(directory, name), folder)
            target = expression_score.target_of_file(relative)
            (unnamed.append(relative) if target is None else (paths.append(os.path.join(folder, relative)),
                                                              targets.append(target)))
    return paths, targets, unnamed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.score_expressions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True, help="the generated faces, named by target")
    parser.add_argument("--reference", required=True, nargs="+", help="photo(s) of the person")
    parser.add_argument("--held-out", nargs="*", default=[], help="other photos of the person, not used to generate")
    parser.add_argument("--models-dir", required=True, help="ComfyUI's models folder")
    parser.add_argument("--pack", default="antelopev2", help="the insightface pack in insightface/models/")
    parser.add_argument("--network", default="", help="an expression network in expression_networks/ (pixel judge)")
    parser.add_argument("--json", default="expression_score.json")
    parser.add_argument("--chart", default="expression_score.png")
    args = parser.parse_args(argv)

    paths, targets, unnamed = named_images(args.folder)
    if unnamed:
        print(f"left out, no target in their names: {', '.join(unnamed[:10])}" + (" ..." if len(unnamed) > 10 else ""))
    if not paths:
        print(f"no image in {args.folder} is named by a target (happy/001.png or happy_001.png).", file=sys.stderr)
        return 2
    providers = choose_providers("auto")
    analyzer = load_face_analyzer(args.pack, os.path.join(args.models_dir, "insightface", "models", args.pack),
                                  providers)
    estimator = load_estimator(os.path.join(args.models_dir, "mediapipe", "face_landmarker.task"))
    network = None
    if args.network:
        network = load_expression_network(os.path.join(args.models_dir, "expression_networks", args.network),
                                          providers)
    references = [read_rgb(p) for p in args.reference]
    identity, _ = extract_identity(analyzer, references)
    held_out = extract_identity(analyzer, [read_rgb(p) for p in args.held_out])[0] if args.held_out else None
    reference_expression = estimate_expressions(estimator, references).expression
    images = [read_rgb(p) for p in paths]
    metrics = face_metrics.measure(analyzer, identity, images, [os.path.relpath(p, args.folder) for p in paths],
                                   expression_score.target_batch(targets), estimator, held_out=held_out,
                                   reference_expression=reference_expression, expression_network=network)
    result = expression_score.score(metrics, targets)
    with open(args.json, "w", encoding="utf-8") as handle:
        handle.write(result.to_json())
    summary = result.summary()
    Image.fromarray(draw_confusion_chart(summary.splitlines(), result.confusion)).save(args.chart)
    print(summary)
    print(f"written: {args.json}, {args.chart}")
    estimator.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
