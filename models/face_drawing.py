"""Draw expressions with GenAffect's face model, no model downloaded. Run from the pack's folder::

    python -m models.face_drawing [--expressions "happy, sad"] [--out sheet.png]
    python -m models.face_drawing --workflow workflows/NAME.json --out workflows/NAME.jpg --overwrite  # a template picture
"""

from __future__ import annotations

import argparse
import json
import os

from PIL import Image

from .drawing.face_drawing import draw_expressions, draw_thumbnail, workflow_expressions
from .errors import GenAffectInputError, checked_number, run_command
from .expression.batch import split_list
from .expression.expression_library import preset_names, presets
from .expression.expression_text import describe_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw expressions with GenAffect's face model (no model files needed).")
    parser.add_argument("--expressions", default="", help="library names, comma-separated (default: the whole library)")
    parser.add_argument("--workflow", default="", help="draw the expressions a saved workflow (.json) names, as its "
                                                       "template picture (512x384)")
    parser.add_argument("--out", default="genaffect_expressions.png", help="where to write the sheet (PNG or JPEG)")
    parser.add_argument("--size", type=int, default=160, help="pixels per face (16 to 1024)")
    parser.add_argument("--no-prompts", action="store_true", help="leave out each expression's prompt text")
    parser.add_argument("--overwrite", action="store_true", help="replace the file at --out if there is one")
    args = parser.parse_args(argv)
    size = checked_number("--size", args.size, whole=True, low=16, high=1024)
    out = check_output(args.out, args.overwrite)
    if args.workflow:
        try:
            with open(args.workflow, encoding="utf-8") as handle:
                workflow = json.load(handle)
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise GenAffectInputError(f"{args.workflow} is not a JSON workflow ({type(error).__name__}: {error}).") from None
        try:
            title, batch = workflow_expressions(workflow)
        except GenAffectInputError as error:
            raise GenAffectInputError(f"{args.workflow}: {error}") from None
        Image.fromarray(draw_thumbnail(title, batch)).save(out, quality=88)
        print(f"{len(batch)} expressions of {args.workflow} drawn to {out}")
        return 0
    names = split_list(args.expressions) or list(preset_names())
    batch = presets(names, 1.0)
    prompts = None if args.no_prompts else describe_batch(batch.blendshapes)
    sheet = draw_expressions(batch, size, title="GenAffect expression library", prompts=prompts)
    Image.fromarray(sheet).save(out)
    print(f"{len(names)} expressions drawn to {out}")
    return 0


def check_output(path: str, overwrite: bool) -> str:
    """``path`` when a picture can be written there: a format PIL writes, an existing folder, and no file already
    there unless ``overwrite``."""
    if os.path.isdir(path):
        raise GenAffectInputError(f"--out {path} is a folder; give a file name, e.g. {os.path.join(path, 'sheet.png')}.")
    extension = os.path.splitext(path)[1].lower()
    if extension not in Image.registered_extensions() or Image.registered_extensions()[extension] not in Image.SAVE:
        raise GenAffectInputError(f"--out {path}: {extension or 'no extension'} is not a picture format Pillow writes; "
                                  "end the name with .png or .jpg.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise GenAffectInputError(f"--out {path}: the folder {folder} does not exist; create it first.")
    if os.path.exists(path) and not overwrite:
        raise GenAffectInputError(f"--out {path} already exists; choose another name, or pass --overwrite to "
                                  "replace it.")
    return path


if __name__ == "__main__":
    raise SystemExit(run_command(main))
