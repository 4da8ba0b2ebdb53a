"""The expression library: named expressions as FACS Action Unit recipes, turned into blendshapes.

The recipes and the AU -> blendshape table are data (``models/data/*.json``), read once. A recipe's
AU code may carry an ``L``/``R`` prefix: the AU then drives only that side's blendshapes (and the
side-less ones at half strength). Several AUs driving one blendshape combine by maximum, so a
recipe never pushes a blendshape past its strongest AU.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import GenAffectInputError
from .expression import BLENDSHAPE_INDEX, NUM_BLENDSHAPES, ExpressionBatch

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_AU_CODE = re.compile(r"^([LR]?)(\d+)$")
_SIDE_SUFFIX = {"L": "Left", "R": "Right"}


@dataclass(frozen=True)
class ActionUnit:
    number: str
    name: str
    blendshapes: tuple[tuple[str, float], ...]
    needs_side: bool = False


@dataclass(frozen=True)
class LibraryExpression:
    name: str
    aus: tuple[tuple[str, float], ...]
    source: str
    description: str
    tags: tuple[str, ...]
    pixelsmile: tuple[str, ...] = ()  # PixelSmile categories it is made of (none, one, or a pairwise blend)


def _read(name: str) -> dict:
    with open(os.path.join(DATA_DIR, name), encoding="utf-8") as handle:
        return json.load(handle)


@lru_cache(maxsize=1)
def action_units() -> dict[str, ActionUnit]:
    table = _read("action_units.json")["action_units"]
    units = {}
    for number, entry in table.items():
        for shape, weight in entry["blendshapes"].items():
            if shape not in BLENDSHAPE_INDEX or not 0.0 < weight <= 1.0:
                raise ValueError(f"action_units.json: AU{number} has a bad blendshape {shape}={weight}")
        units[number] = ActionUnit(number, entry["name"], tuple(entry["blendshapes"].items()), entry.get("needs_side", False))
    return units


@lru_cache(maxsize=1)
def library() -> dict[str, LibraryExpression]:
    data = _read("expressions.json")
    entries = {}
    for entry in data["expressions"]:
        if entry["name"] in entries:
            raise ValueError(f"expressions.json: {entry['name']!r} is defined twice")
        if entry["source"] not in data["sources"]:
            raise ValueError(f"expressions.json: {entry['name']!r} cites unknown source {entry['source']!r}")
        recipe = tuple(entry["aus"].items())
        blendshapes_from_aus(recipe, context=entry["name"])  # validates codes and intensities
        categories = tuple(entry["pixelsmile"])
        allowed = set(data["pixelsmile"]["categories"]) | {data["pixelsmile"]["neutral"]}
        if len(categories) > 2 or not set(categories) <= allowed:
            raise ValueError(f"expressions.json: {entry['name']!r} has PixelSmile categories {list(categories)}; "
                             f"at most two of {sorted(allowed)}")
        entries[entry["name"]] = LibraryExpression(
            entry["name"], recipe, data["sources"][entry["source"]], entry["description"], tuple(entry["tags"]),
            categories,
        )
    return entries


def pixelsmile() -> dict:
    """PixelSmile's categories, its neutral word and its instruction template (``expressions.json``)."""
    return _read("expressions.json")["pixelsmile"]


def parse_au(code: str) -> tuple[str, str]:
    """``"L12"`` -> ``("L", "12")``; ``"4"`` -> ``("", "4")``."""
    match = _AU_CODE.match(str(code).strip())
    if not match:
        raise GenAffectInputError(f"{code!r} is not an Action Unit code (examples: 12, L12, R46).")
    return match.group(1), match.group(2)


def blendshapes_from_aus(recipe, context: str = "recipe") -> np.ndarray:
    """(52,) blendshapes for AU ``(code, intensity)`` pairs."""
    units = action_units()
    vector = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
    for code, intensity in recipe:
        side, number = parse_au(code)
        if number not in units:
            raise GenAffectInputError(f"{context}: AU{number} is not in the AU table ({sorted(units, key=int)}).")
        if not 0.0 <= float(intensity) <= 1.0:
            raise GenAffectInputError(f"{context}: AU {code} intensity {intensity} is outside 0..1.")
        unit = units[number]
        if unit.needs_side and not side:
            raise GenAffectInputError(f"{context}: AU{number} ({unit.name}) acts on one side; write L{number} or R{number}.")
        for shape, weight in unit.blendshapes:
            strength = weight * float(intensity)
            if side:
                if shape.endswith(_SIDE_SUFFIX["R" if side == "L" else "L"]):
                    continue
                if not shape.endswith(_SIDE_SUFFIX[side]):
                    strength *= 0.5  # a one-sided AU moves a midline shape (jaw, pucker) only partly
            index = BLENDSHAPE_INDEX[shape]
            vector[index] = max(vector[index], strength)
    return np.clip(vector, 0.0, 1.0)


def preset_names() -> list[str]:
    return list(library())


def presets(names: list[str], intensity: float = 1.0) -> ExpressionBatch:
    """A batch with one row per named library expression, blendshapes scaled by ``intensity``."""
    entries = library()
    for name in names:
        if name not in entries:
            close = difflib.get_close_matches(name, list(entries), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else f" The library has: {', '.join(entries)}."
            raise GenAffectInputError(f"{name!r} is not in the expression library.{hint}")
    if not names:
        raise GenAffectInputError("choose at least one expression.")
    rows = [blendshapes_from_aus(entries[n].aus, n) * float(intensity) for n in names]
    return ExpressionBatch(labels=list(names), blendshapes=np.clip(np.stack(rows), 0.0, 1.0))
