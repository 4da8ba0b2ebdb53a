"""The model check node (category GenAffect/face): every model file, found or not, and the fix."""

from __future__ import annotations

import logging

from ..models.files.model_catalog import CATALOG
from ..models.files.model_check import check_models, check_routes, format_report, format_routes, onnxruntime_report
from . import comfy_host

log = logging.getLogger(__name__)


class GenAffectCheckModels:
    DESCRIPTION = (
        "Lists every model file GenAffect can use - found, missing, misplaced or incomplete - with the "
        "download link and the exact folder to put it in. Connect 'report' to a Preview Any node, or read "
        "the ComfyUI console. The same report runs outside ComfyUI: python -m models.doctor --models-dir PATH."
    )
    CATEGORY = "GenAffect/face"
    FUNCTION = "check"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    OUTPUT_TOOLTIPS = ("The model report as text.",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "only_problems": ("BOOLEAN", {"default": False,
                                              "tooltip": "List only files that are missing, misplaced or broken."}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # the disk may have changed since the last run: always re-check

    def check(self, only_problems):
        folders = sorted({entry.folder for entry in CATALOG})
        roots = {folder: comfy_host.model_roots(folder) for folder in folders}
        search_dirs = [comfy_host.models_dir()] + [r for rs in roots.values() for r in rs]
        statuses = check_models(roots, search_dirs)
        shown = [s for s in statuses if s.state != "found"] if only_problems else statuses
        report = format_report(shown, header="GenAffect model check") if shown else "GenAffect: every model file is in place."
        routes = check_routes(statuses, {**roots, **{f: comfy_host.model_roots(f) for f in ("genaffect", "loras")}})
        report += "\n" + format_routes(routes) + "\n" + onnxruntime_report()
        log.info("%s", report)
        return {"ui": {"text": [report]}, "result": (report,)}
