"""The expression library: named expressions as FACS Action Unit recipes, turned into blendshapes.

The recipes and the AU -> blendshape table are data (``models/data/*.json``), read once. A recipe's
AU code may carry an ``L``/``R`` prefix: the AU then drives only that side's blendshapes (and the
side-less ones at half strength). Several AUs driving one blendshape combine by maximum, so a
recipe never pushes a blendshape past its strongest AU.

Beside its recipe every preset has an **estimator-space target** (``models/data/estimator_targets.json``,
written by ``tools/calibrate_expressions.py``): the 52 blendshapes MediaPipe's face landmarker actually
reads on photos of that expression. The recipe says what the face does (prompts, sliders); the target says
what the estimator sees when it does it (expression error, the DiT adapter, which learnt from MediaPipe's
readings). The same file lists the blendshapes the estimator can read at all.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import GenAffectInputError, PackDataError, checked_number
from ..files.packaged_data import RESTORE, parsing, read_json
from .batch import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES, MOVEMENT_NAMES, NUM_BLENDSHAPES, ExpressionBatch

_AU_CODE = re.compile(r"^([LR]?)(\d+)$")
_SIDE_SUFFIX = {"L": "Left", "R": "Right"}
ESTIMATOR_TARGETS = "estimator_targets.json"
ESTIMATOR_FORMAT = "genaffect.estimator_targets"
MAX_EXPRESSIONS = 10_000  # one image each: a typed list longer than this is a mistake, not a batch
RECALIBRATE = ("run tools/calibrate_expressions.py (--rederive needs no photos: it refreshes the targets of "
               "the presets without photos from the recipes and the stored gains)")


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


@lru_cache(maxsize=1)
def action_units() -> dict[str, ActionUnit]:
    with parsing("action_units.json"):
        table = read_json("action_units.json")["action_units"]
        units = {}
        for number, entry in table.items():
            for shape, weight in entry["blendshapes"].items():
                if shape not in BLENDSHAPE_INDEX or not 0.0 < weight <= 1.0:
                    raise ValueError(f"AU{number} has a bad blendshape {shape}={weight}")
            units[number] = ActionUnit(number, entry["name"], tuple(entry["blendshapes"].items()),
                                       entry.get("needs_side", False))
    return units


@lru_cache(maxsize=1)
def library() -> dict[str, LibraryExpression]:
    with parsing("expressions.json"):
        data = read_json("expressions.json")
        entries = {}
        for entry in data["expressions"]:
            if entry["name"] in entries:
                raise ValueError(f"{entry['name']!r} is defined twice")
            if entry["source"] not in data["sources"]:
                raise ValueError(f"{entry['name']!r} cites unknown source {entry['source']!r}")
            recipe = tuple(entry["aus"].items())
            blendshapes_from_aus(recipe, context=entry["name"])  # validates codes and intensities
            categories = tuple(entry["pixelsmile"])
            allowed = set(data["pixelsmile"]["categories"]) | {data["pixelsmile"]["neutral"]}
            if len(categories) > 2 or not set(categories) <= allowed:
                raise ValueError(f"{entry['name']!r} has PixelSmile categories {list(categories)}; at most two of "
                                 f"{sorted(allowed)}")
            entries[entry["name"]] = LibraryExpression(
                entry["name"], recipe, data["sources"][entry["source"]], entry["description"], tuple(entry["tags"]),
                categories,
            )
    return entries


def pixelsmile() -> dict:
    """PixelSmile's categories, its neutral word and its instruction template (``expressions.json``)."""
    with parsing("expressions.json"):
        return read_json("expressions.json")["pixelsmile"]


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


def check_names(names: list[str]) -> dict[str, LibraryExpression]:
    """The library, after checking that ``names`` are 1 to :data:`MAX_EXPRESSIONS` of its presets."""
    entries = library()
    if not names:
        raise GenAffectInputError("choose at least one expression.")
    if len(names) > MAX_EXPRESSIONS:
        raise GenAffectInputError(f"{len(names)} expressions asked for; a batch holds at most {MAX_EXPRESSIONS} (one "
                                  "image each). Shorten the list.")
    for name in dict.fromkeys(names):
        if name not in entries:
            close = difflib.get_close_matches(name[:200], list(entries), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else f" The library has: {', '.join(entries)}."
            raise GenAffectInputError(f"{name[:200]!r} is not in the expression library.{hint}")
    return entries


def presets(names: list[str], intensity: float = 1.0) -> ExpressionBatch:
    """A batch with one row per named library expression: the recipes' blendshapes scaled by ``intensity``, and
    beside them the presets' estimator-space targets at that intensity (:func:`estimator_at_intensity`)."""
    entries = check_names(names)
    intensity = checked_number("intensity", intensity, low=0)
    unique = list(dict.fromkeys(names))  # each preset's rows computed once, however often it is named
    position = {name: i for i, name in enumerate(unique)}
    rows = [position[name] for name in names]
    recipes = np.stack([blendshapes_from_aus(entries[n].aus, n) for n in unique])[rows] * intensity
    targets = estimator_at_intensity(np.stack([estimator_target(n) for n in unique])[rows], intensity)
    return ExpressionBatch(labels=list(names), blendshapes=np.clip(recipes, 0.0, 1.0), estimator_blendshapes=targets)


@dataclass(frozen=True)
class EstimatorSpace:
    """``estimator_targets.json``, read and checked: every preset's target, which are photo-calibrated, the
    blendshapes the estimator can read, and the per-blendshape gains of the rule for presets without photos."""

    targets: dict[str, np.ndarray]  # preset name -> (52,) in 0..1, BLENDSHAPE_NAMES order
    photo_calibrated: dict[str, bool]
    readable: tuple[str, ...]  # movement blendshapes the estimator reads (the error is measured over these)
    readable_indices: np.ndarray  # their positions in the 52
    gains: np.ndarray  # (52,) estimator reading per unit of recipe, per blendshape (0 where unreadable)
    data: dict  # the whole file (provenance, rules, evaluation)

    @property
    def neutral(self) -> np.ndarray:
        """What the estimator reads on a relaxed face (zeros when no neutral photos were measured)."""
        if self.photo_calibrated.get("neutral"):
            return self.targets["neutral"]
        return np.zeros(NUM_BLENDSHAPES, np.float32)


def _numbers(value, count: int | None = None) -> np.ndarray | None:
    """``value`` as a float32 vector when it is a list of finite real numbers (``count`` of them), else None."""
    if not isinstance(value, list) or (count is not None and len(value) != count):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    return np.asarray(value, dtype=np.float32)


def check_estimator_targets(data: dict, preset_names) -> EstimatorSpace:
    """Validate the estimator-targets data (a dict as stored) against the library's presets."""
    def bad(message):
        raise PackDataError(f"{ESTIMATOR_TARGETS}: {message}. {RESTORE} Or rebuild it: {RECALIBRATE}.")

    if not isinstance(data, dict):
        bad(f"it holds a {type(data).__name__}, not a JSON object")
    if data.get("format") != ESTIMATOR_FORMAT:
        bad(f"format is {data.get('format')!r}, expected {ESTIMATOR_FORMAT!r}")
    names = data.get("blendshape_names")
    if not isinstance(names, (list, tuple)) or tuple(names) != BLENDSHAPE_NAMES:
        bad("blendshape_names is not MediaPipe's 52 names in their order")
    readable = data.get("readable", {}).get("names", ()) if isinstance(data.get("readable"), dict) else None
    if (not isinstance(readable, list) or not readable or not all(isinstance(n, str) for n in readable)
            or not set(readable) <= set(MOVEMENT_NAMES) or len(set(readable)) != len(readable)):
        bad(f"readable.names must be a non-empty list of distinct movement blendshapes, got {readable!r:.200}")
    readable = tuple(readable)
    gains = np.zeros(NUM_BLENDSHAPES, np.float32)
    stored_gains = data.get("gains", {})
    if not isinstance(stored_gains, dict):
        bad(f"gains must map blendshape names to numbers, got a {type(stored_gains).__name__}")
    for name, gain in stored_gains.items():
        value = _numbers([gain])
        if name not in readable or value is None or value[0] < 0:
            bad(f"gain {name}={gain!r:.40} (gains are numbers >= 0, for readable blendshapes only)")
        gains[BLENDSHAPE_INDEX[name]] = value[0]
    stored = data.get("targets", {})
    if not isinstance(stored, dict):
        bad(f"targets must map preset names to their targets, got a {type(stored).__name__}")
    missing, extra = [n for n in preset_names if n not in stored], [n for n in stored if n not in preset_names]
    if missing or extra:
        bad(f"targets missing for {missing}, targets for presets the library does not have: {extra}")
    targets, calibrated = {}, {}
    for name in preset_names:
        entry = stored[name]
        if not isinstance(entry, dict):
            bad(f"the target of {name!r} is a {type(entry).__name__}, not an object")
        vector = _numbers(entry.get("blendshapes"), NUM_BLENDSHAPES)
        if vector is None or vector.min() < 0 or vector.max() > 1:
            bad(f"the target of {name!r} must be {NUM_BLENDSHAPES} values in 0..1")
        if not isinstance(entry.get("photo_calibrated"), bool):
            bad(f"{name!r} must say whether it is photo_calibrated (true/false)")
        counts = _numbers([entry.get("photos", 0), entry.get("people", 0)])
        if entry["photo_calibrated"] and not (counts is not None and counts.min() >= 1):
            bad(f"{name!r} is photo-calibrated but names no photos/people")
        targets[name], calibrated[name] = vector, entry["photo_calibrated"]
    indices = np.array([BLENDSHAPE_INDEX[n] for n in readable], dtype=np.int64)
    return EstimatorSpace(targets, calibrated, readable, indices, gains, data)


@lru_cache(maxsize=1)
def estimator_space() -> EstimatorSpace:
    restore = f"{RESTORE} Or rebuild it: {RECALIBRATE}."
    return check_estimator_targets(read_json(ESTIMATOR_TARGETS, restore), list(library()))


def readable_blendshapes() -> tuple[str, ...]:
    """The movement blendshapes the estimator reads (measured: ``estimator_targets.json`` says by which rule)."""
    return estimator_space().readable


def estimator_target(name: str) -> np.ndarray:
    """A preset's (52,) estimator-space target: photo-calibrated, or derived by :func:`derive_estimator_target`."""
    space = estimator_space()
    if name not in space.targets:
        presets([name])  # the library's own "not in the library, did you mean" error
    return space.targets[name].copy()


def derive_estimator_target(recipe: np.ndarray, neutral: np.ndarray, gains: np.ndarray,
                            readable_indices: np.ndarray) -> np.ndarray:
    """The estimator-space target of a preset without photos: the neutral face's reading plus, on the readable
    blendshapes, the recipe's blendshapes times each blendshape's gain (what the estimator read per unit of recipe
    on the photo-calibrated presets); unreadable blendshapes keep the neutral reading."""
    target = np.asarray(neutral, np.float32).copy()
    target[readable_indices] += gains[readable_indices] * np.asarray(recipe, np.float32)[readable_indices]
    return np.clip(target, 0.0, 1.0).astype(np.float32)


def estimator_at_intensity(targets: np.ndarray, intensity: float) -> np.ndarray:
    """Estimator-space targets at an intensity: 0 is the neutral face as the estimator reads it (never all
    zeros: a relaxed face still reads some blink or squint), 1 the target, in between on the straight line."""
    neutral, k = estimator_space().neutral, float(intensity)
    # (1 - k) * neutral + k * target is the target itself at 1 and the neutral reading at 0, bit for bit
    return np.clip((1.0 - k) * neutral + k * np.asarray(targets, np.float32), 0.0, 1.0).astype(np.float32)
