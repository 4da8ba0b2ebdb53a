"""Model check outside ComfyUI.

Run from the pack's folder (``ComfyUI/custom_nodes/<this pack>``)::

    python -m models.doctor --models-dir ../../models [--routes face,expression]

A relative ``--models-dir`` is read from the folder you are in as your shell names it, so ``../../models`` also
works when the pack folder is a symbolic link to a checkout elsewhere.

It prints the same report as the ``GenAffectCheckModels`` node, and which routes (face analysis,
expression estimation, Arc2Face, DiT adapter, instruction editors) are ready. It exits with 1 when a
route asked for with ``--routes`` (default: face and expression) is not ready.
"""

from __future__ import annotations

import argparse
import os
import sys

from .files.model_catalog import CATALOG
from .files.model_check import ROUTES, check_models, check_routes, format_report, format_routes, onnxruntime_report


def roots_for_models_dir(models_dir: str) -> dict[str, list[str]]:
    """ComfyUI's default layout: every model folder is ``<models dir>/<folder>``."""
    folders = {entry.folder for entry in CATALOG} | {"genaffect", "loras"}
    return {folder: [os.path.join(models_dir, folder)] for folder in folders}


def resolve_models_dir(path: str) -> str:
    """``path`` made absolute as the user's shell reads it. Python's working directory is the physical one, so from
    ``ComfyUI/custom_nodes/genaffect`` linked to ``~/src/genaffect``, ``../../models`` would name ``~/models``; the
    shell's ``$PWD`` keeps the path the user came by (``cd ../..`` lands in ComfyUI/), so a relative path is joined
    to it when it names the same folder as the working directory (it does not when a program changed directory)."""
    logical = os.environ.get("PWD", "")
    if not os.path.isabs(path) and os.path.isabs(logical):
        try:
            same = os.path.samefile(logical, os.getcwd())
        except OSError:
            same = False
        if same:
            return os.path.normpath(os.path.join(logical, path))
    return os.path.abspath(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="ComfyUI's models folder (ComfyUI/models)")
    parser.add_argument("--routes", default="face,expression",
                        help=f"the routes you use, comma-separated, of {', '.join(ROUTES)} (default: face,expression); "
                             "the exit code is 1 when one of them is not ready")
    args = parser.parse_args(argv)
    wanted = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = sorted(set(wanted) - set(ROUTES))
    if unknown:
        print(f"unknown route(s) {unknown}; choose from {', '.join(ROUTES)}.", file=sys.stderr)
        return 2
    models_dir = resolve_models_dir(args.models_dir)
    if not os.path.isdir(models_dir):
        print(f"{models_dir} is not a folder; pass ComfyUI's models folder with --models-dir "
              "(an absolute path, e.g. /path/to/ComfyUI/models, works from anywhere).", file=sys.stderr)
        return 2
    roots = roots_for_models_dir(models_dir)
    statuses = check_models(roots, [models_dir])
    routes = check_routes(statuses, roots)
    print(format_report(statuses, header=f"GenAffect model check for {models_dir}"))
    print(format_routes(routes))
    print(onnxruntime_report())
    return 0 if all(route.ready for route in routes if route.key in wanted) else 1


if __name__ == "__main__":
    sys.exit(main())
