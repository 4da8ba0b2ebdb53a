"""Blendshapes -> FLAME-55 mappings: fit on estimated frames, save, apply (category GenAffect/expression)."""

from __future__ import annotations

import dataclasses
import logging
import os
import re

from ..models.errors import GenAffectInputError, ModelFileError
from ..models.expression import expression_mapping
from . import comfy_host, sockets

log = logging.getLogger(__name__)

FOLDER = "genaffect"
SUBFOLDER = "mappings"
EXTENSIONS = (".safetensors",)
USE_INPUT = "(the mapping input)"
NODE = "GenAffect Fit Expression Mapping"


def saved_mappings() -> list[str]:
    return [name for name in comfy_host.list_model_files(FOLDER, EXTENSIONS) if name.startswith(SUBFOLDER + "/")]


WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def _free_path(name: str) -> str:
    """models/genaffect/mappings/<name>_00001.safetensors, numbered past any file already there."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,80}", name):
        raise GenAffectInputError(
            f"mapping name {name!r}: use letters, digits, spaces, '_', '-' or '.' (no folders), e.g. 'my_face'."
        )
    if name.split(".")[0].strip().upper() in WINDOWS_RESERVED:  # Windows cannot create such files
        raise GenAffectInputError(f"mapping name {name!r} is a name Windows reserves for devices; choose another, "
                                  "e.g. 'my_face'.")
    folder = os.path.join(comfy_host.model_roots(FOLDER)[0], SUBFOLDER)
    os.makedirs(folder, exist_ok=True)
    number = 1
    while os.path.exists(os.path.join(folder, f"{name}_{number:05d}.safetensors")):
        number += 1
    return os.path.join(folder, f"{name}_{number:05d}.safetensors")


class GenAffectFitExpressionMapping:
    DESCRIPTION = (
        "Learns how this face's MediaPipe blendshapes relate to SMIRK's FLAME-55, from frames run through both "
        "(e.g. a short video of the person making faces, through Estimate Expression with SMIRK loaded). The map "
        "fills FLAME-55 for presets and slider edits, which only have blendshapes. Reports R² on held-out "
        "frames and saves the map under models/genaffect/mappings/."
    )
    CATEGORY = "GenAffect/expression"
    FUNCTION = "fit"
    OUTPUT_NODE = True
    RETURN_TYPES = (sockets.EXPRESSION_MAPPING, "STRING")
    RETURN_NAMES = ("mapping", "report")
    OUTPUT_TOOLTIPS = ("The fitted map (also saved as a file).", "Frames used, held-out R² and the file written.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "expression": (sockets.EXPRESSION, {
                    "tooltip": "Frames estimated with both blendshapes and FLAME-55 (Estimate Expression with "
                               f"SMIRK loaded); at least {expression_mapping.MIN_FRAMES}, more varied is better."}),
                "ridge": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 100.0, "step": 0.001,
                                    "tooltip": "Regularisation. Raise it when the held-out R² is much lower than "
                                               "you expect (few or repetitive frames)."}),
                "heldout_fraction": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 0.5, "step": 0.05,
                                               "tooltip": "Share of frames kept out of the fit to measure R²; the "
                                                          "saved map is then refitted on all frames."}),
                "save_as": ("STRING", {"default": "my_face",
                                       "tooltip": "File name in models/genaffect/mappings/ (numbered, never "
                                                  "overwritten). Empty: do not save."}),
            }
        }

    def fit(self, expression, ridge, heldout_fraction, save_as):
        blendshapes = expression.require("blendshapes", NODE)
        flame = expression.require("flame", NODE)
        mapping = expression_mapping.fit_mapping(blendshapes, flame, ridge=ridge, heldout_fraction=heldout_fraction)
        report = mapping.describe()
        if mapping.heldout_frames and mapping.heldout_r2 < 0.5:
            report += "\nwarning: a low R² means the map explains little of FLAME-55; use more varied frames."
        if save_as.strip():
            path = _free_path(save_as.strip())
            expression_mapping.save_mapping(mapping, path)
            report += f"\nsaved: {path}"
        log.info("GenAffect %s", report)
        return {"ui": {"text": [report]}, "result": (mapping, report)}


class GenAffectApplyExpressionMapping:
    DESCRIPTION = (
        "Fills FLAME-55 from blendshapes with a fitted map, for expressions that have only blendshapes (presets, "
        "slider edits, transitions), so they can drive Arc2Face's Expression Adapter. Takes the map from Fit "
        "Expression Mapping or from a file saved in models/genaffect/mappings/."
    )
    CATEGORY = "GenAffect/expression"
    FUNCTION = "apply"
    RETURN_TYPES = (sockets.EXPRESSION,)
    RETURN_NAMES = ("expression",)
    OUTPUT_TOOLTIPS = ("The same expressions, with FLAME-55.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "expression": (sockets.EXPRESSION, {"tooltip": "Expressions with blendshapes."}),
                "mapping_file": ([USE_INPUT] + saved_mappings(), {
                    "tooltip": "A map saved by Fit Expression Mapping, or the mapping input when connected."}),
                "replace_existing": ("BOOLEAN", {"default": False,
                                                 "tooltip": "Also replace FLAME-55 that expressions already have "
                                                            "(e.g. from SMIRK). Off: keep it."}),
            },
            "optional": {
                "mapping": (sockets.EXPRESSION_MAPPING, {"tooltip": "From Fit Expression Mapping."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, mapping_file, **_):
        return comfy_host.file_identity(comfy_host.model_file_path(FOLDER, mapping_file, EXTENSIONS))

    def apply(self, expression, mapping_file, replace_existing, mapping=None):
        if mapping_file != USE_INPUT:
            path = comfy_host.model_file_path(FOLDER, mapping_file, EXTENSIONS)
            if path is None:
                raise ModelFileError(f"{mapping_file} is not in models/{FOLDER}/; fit and save a mapping first.")
            mapping = expression_mapping.load_mapping(path)
        elif mapping is None:
            raise GenAffectInputError(
                "Apply Expression Mapping has no map: connect the mapping input (from Fit Expression Mapping) or choose "
                "a saved mapping_file."
            )
        if expression.flame is not None and not replace_existing:
            return (expression,)
        blendshapes = expression.require("blendshapes", "GenAffect Apply Expression Mapping")
        return (dataclasses.replace(expression, flame=mapping.apply(blendshapes)),)
