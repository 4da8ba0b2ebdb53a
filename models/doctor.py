"""Model check outside ComfyUI.

Run from the pack's folder (``ComfyUI/custom_nodes/<this pack>``)::

    python -m models.doctor --models-dir ../../models

It prints the same report as the ``GenAffectCheckModels`` node and exits with 1 when a needed file
is not usable.
"""

from __future__ import annotations

import argparse
import os
import sys

from .model_catalog import CATALOG
from .model_check import FOUND, check_models, format_report, onnxruntime_report


def roots_for_models_dir(models_dir: str) -> dict[str, list[str]]:
    """ComfyUI's default layout: every model folder is ``<models dir>/<folder>``."""
    return {entry.folder: [os.path.join(models_dir, entry.folder)] for entry in CATALOG}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="ComfyUI's models folder (ComfyUI/models)")
    args = parser.parse_args(argv)
    models_dir = os.path.abspath(args.models_dir)
    if not os.path.isdir(models_dir):
        print(f"{models_dir} is not a folder; pass ComfyUI's models folder with --models-dir.", file=sys.stderr)
        return 2
    statuses = check_models(roots_for_models_dir(models_dir), [models_dir])
    print(format_report(statuses, header=f"GenAffect model check for {models_dir}"))
    print(onnxruntime_report())
    return 0 if all(s.state == FOUND or s.entry.optional for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
