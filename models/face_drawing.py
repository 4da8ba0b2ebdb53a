"""Draw expressions with GenAffect's face model, no model downloaded. Run from the pack's folder::

    python -m models.face_drawing [--expressions "happy, sad"] [--out sheet.png]
    python -m models.face_drawing --workflow workflows/NAME.json --out workflows/NAME.jpg   # a template picture
"""

from __future__ import annotations

import argparse
import json

from PIL import Image

from .drawing.face_drawing import draw_expressions, draw_thumbnail, workflow_expressions
from .expression.batch import split_list
from .expression.expression_library import preset_names, presets
from .expression.expression_text import describe_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw expressions with GenAffect's face model (no model files needed).")
    parser.add_argument("--expressions", default="", help="library names, comma-separated (default: the whole library)")
    parser.add_argument("--workflow", default="", help="draw the expressions a saved workflow (.json) names, as its "
                                                       "template picture (512x384)")
    parser.add_argument("--out", default="genaffect_expressions.png", help="where to write the sheet (PNG or JPEG)")
    parser.add_argument("--size", type=int, default=160, help="pixels per face")
    parser.add_argument("--no-prompts", action="store_true", help="leave out each expression's prompt text")
    args = parser.parse_args(argv)
    if args.workflow:
        with open(args.workflow, encoding="utf-8") as handle:
            title, batch = workflow_expressions(json.load(handle))
        Image.fromarray(draw_thumbnail(title, batch)).save(args.out, quality=88)
        print(f"{len(batch)} expressions of {args.workflow} drawn to {args.out}")
        return 0
    names = split_list(args.expressions) or list(preset_names())
    batch = presets(names, 1.0)
    prompts = None if args.no_prompts else describe_batch(batch.blendshapes)
    sheet = draw_expressions(batch, args.size, title="GenAffect expression library", prompts=prompts)
    Image.fromarray(sheet).save(args.out)
    print(f"{len(names)} expressions drawn to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
