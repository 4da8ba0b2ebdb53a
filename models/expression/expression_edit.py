"""Editing expressions: slider edits, transitions A -> B, and weighted mixes.

Blendshapes stay in 0..1. On FLAME-55 only the fields with a clear meaning are edited: overall
intensity scales the 50 expression coefficients, the blink sliders move the two eyelid values, and the
jaw sliders move the jaw rotation (opening >= 0, sideways within +-0.2 rad, SMIRK's own limits).
Estimator-space blendshapes (a preset's calibrated target) follow every edit: a slider moves them by its
movement as the estimator reads it (the calibrated gains), intensity is measured from the neutral face's
reading, and transitions and mixes blend them like the blendshapes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ..errors import GenAffectInputError, checked_number
from .batch import (
    ARRAYS,
    BLENDSHAPE_INDEX,
    FLAME_EXPRESSION,
    FLAME_EXPRESSION_LIMIT,
    FLAME_EYELIDS,
    FLAME_JAW,
    JAW_SIDE,
    NUM_BLENDSHAPES,
    ZERO_WHEN_MISSING,
    ExpressionBatch,
    split_list,
)
from .expression_library import estimator_at_intensity, estimator_space, preset_names, presets

log = logging.getLogger(__name__)
EASINGS = ("linear", "ease in-out", "ease in", "ease out")
# The Editor's slider groups, top to bottom (its widgets keep this order, so saved workflows map onto it)
REGIONS = ("brows", "eyes", "gaze", "cheeks", "nose", "mouth", "jaw", "head")
JAW_OPEN_RADIANS = 0.25  # FLAME jaw opening for jaw_open = 1 (SMIRK's estimates rarely exceed ~0.3)


@dataclass(frozen=True)
class Slider:
    name: str  # the widget's name (kept: saved workflows name it)
    region: str
    adds: tuple[str, ...]  # blendshapes a positive value drives
    subtracts: tuple[str, ...] = ()  # blendshapes a negative value drives (two-way sliders)
    tooltip: str = ""
    label: str = ""  # what an artist calls it


def _side(name: str, region: str, stem: str, what: str, label: str) -> tuple[Slider, Slider]:
    return (
        Slider(f"{name}_left", region, (stem + "Left",), tooltip=f"{what}, the subject's left side (the image's right).",
               label=f"{label} (left)"),
        Slider(f"{name}_right", region, (stem + "Right",), tooltip=f"{what}, the subject's right side (the image's left).",
               label=f"{label} (right)"),
    )


SLIDERS: tuple[Slider, ...] = (
    Slider("brow_inner_up", "brows", ("browInnerUp",), tooltip="Raise the inner brows (worry, sadness).",
           label="Worried brows"),
    *_side("brow_outer_up", "brows", "browOuterUp", "Raise the outer brow", "Raise brow"),
    *_side("brow_down", "brows", "browDown", "Lower and knit the brow (anger, focus)", "Scowl"),
    *_side("blink", "eyes", "eyeBlink", "Close the eye (1 = closed)", "Blink"),
    *_side("squint", "eyes", "eyeSquint", "Narrow the eye", "Squint"),
    *_side("eye_wide", "eyes", "eyeWide", "Open the eye wide", "Wide eye"),
    Slider("gaze_horizontal", "gaze", ("eyeLookInLeft", "eyeLookOutRight"), ("eyeLookOutLeft", "eyeLookInRight"),
           "Gaze: negative = to the subject's left (the image's right), positive = to the subject's right.",
           label="Look left / right"),
    Slider("gaze_vertical", "gaze", ("eyeLookUpLeft", "eyeLookUpRight"), ("eyeLookDownLeft", "eyeLookDownRight"),
           "Gaze: positive = up, negative = down.", label="Look up / down"),
    Slider("cheek_puff", "cheeks", ("cheekPuff",), tooltip="Puff the cheeks out.", label="Puff cheeks"),
    *_side("cheek_raise", "cheeks", "cheekSquint", "Raise the cheek (Duchenne smile)", "Raise cheek"),
    *_side("sneer", "nose", "noseSneer", "Wrinkle the nose / raise the nostril", "Sneer"),
    *_side("smile", "mouth", "mouthSmile", "Pull the mouth corner up", "Smile"),
    *_side("frown", "mouth", "mouthFrown", "Pull the mouth corner down", "Frown"),
    *_side("dimple", "mouth", "mouthDimple", "Tighten the mouth corner into a dimple", "Dimple"),
    *_side("lip_stretch", "mouth", "mouthStretch", "Stretch the lip corner sideways", "Stretch lips"),
    Slider("upper_lip_up", "mouth", ("mouthUpperUpLeft", "mouthUpperUpRight"), tooltip="Raise the upper lip (disgust).",
           label="Raise upper lip"),
    Slider("lower_lip_down", "mouth", ("mouthLowerDownLeft", "mouthLowerDownRight"), tooltip="Pull the lower lip down.",
           label="Lower the lower lip"),
    Slider("lips_press", "mouth", ("mouthPressLeft", "mouthPressRight"), tooltip="Press the lips together.",
           label="Press lips"),
    Slider("pucker", "mouth", ("mouthPucker",), tooltip="Pucker the lips ('oo', kiss).", label="Pucker (oo)"),
    Slider("funnel", "mouth", ("mouthFunnel",), tooltip="Funnel the lips ('oh').", label="Funnel (oh)"),
    Slider("chin_raise", "mouth", ("mouthShrugLower",), tooltip="Raise the chin, pushing the lower lip up (pout).",
           label="Pout"),
    Slider("mouth_sideways", "mouth", ("mouthRight",), ("mouthLeft",),
           tooltip="Pull the whole mouth: negative = to the subject's left, positive = right.", label="Mouth sideways"),
    Slider("jaw_open", "jaw", ("jawOpen",), tooltip="Open the jaw.", label="Open mouth"),
    Slider("jaw_sideways", "jaw", ("jawRight",), ("jawLeft",), tooltip="Shift the jaw: negative = subject's left, positive = right.",
           label="Jaw sideways"),
    Slider("jaw_forward", "jaw", ("jawForward",), tooltip="Push the jaw forward.", label="Jaw forward"),
)
SLIDER_NAMES = tuple(s.name for s in SLIDERS)


@dataclass(frozen=True)
class HeadSlider:
    name: str
    axis: int  # 0 yaw, 1 pitch, 2 roll (the order of head_turn)
    label: str
    tooltip: str


HEAD_LIMIT_DEGREES = 25.0  # a warp shows turns this small well (the hidden side of the head is not in a photo)
HEAD_SLIDERS = (
    HeadSlider("head_yaw", 0, "Turn", "Turn the head (yaw, degrees): positive = towards the image's right (the "
               "subject's left). Warp Expression turns the photo's head by it."),
    HeadSlider("head_pitch", 1, "Nod", "Nod the head (pitch, degrees): positive = chin down. Warp Expression turns the "
               "photo's head by it."),
    HeadSlider("head_roll", 2, "Tilt", "Tilt the head (roll, degrees): positive = counter-clockwise in the image. Warp "
               "Expression turns the photo's head by it."),
)
HEAD_SLIDER_NAMES = tuple(s.name for s in HEAD_SLIDERS)


def add_head_turn(batch: ExpressionBatch, turn) -> ExpressionBatch:
    """The batch with (yaw, pitch, roll) degrees added to every expression's head turn."""
    turn = np.asarray(turn, dtype=np.float32)
    if turn.shape != (3,) or not np.all(np.isfinite(turn)):
        raise GenAffectInputError(f"a head turn is yaw, pitch and roll in degrees, got {turn.tolist()}.")
    return replace(batch, head_turn=batch.filled("head_turn") + turn)


AXES = {"yaw": 0, "pitch": 1, "roll": 2}
STRAIGHT = "straight"
TURN_LIMIT_DEGREES = 90.0  # beyond it the face looks away from the camera


def parse_turns(text: str) -> list[tuple[str, np.ndarray]]:
    """'straight, yaw -20, yaw 20, pitch 10 roll -5' -> [(label, (yaw, pitch, roll) degrees)], one per item:
    items are separated by commas; an item is 'straight' or axis-degree pairs (yaw, pitch, roll; signs as the
    Editor's head sliders)."""
    turns = []
    for item in split_list(text):
        words = item.lower().split()
        turn = np.zeros(3, np.float32)
        if words != [STRAIGHT]:
            if not words or len(words) % 2:
                raise GenAffectInputError(f"head turn {item!r}: write '{STRAIGHT}' or axis-degree pairs such as "
                                          "'yaw -20' or 'yaw 15 pitch 10' (axes: yaw, pitch, roll).")
            for axis, number in zip(words[::2], words[1::2]):
                if axis not in AXES:
                    raise GenAffectInputError(f"head turn {item!r}: unknown axis {axis!r}; use yaw, pitch or roll.")
                try:
                    degrees = float(number)
                except ValueError as error:
                    raise GenAffectInputError(f"head turn {item!r}: {number!r} is not a number of degrees.") from error
                if not math.isfinite(degrees) or abs(degrees) > TURN_LIMIT_DEGREES:
                    raise GenAffectInputError(f"head turn {item!r}: {axis} must be within +-{TURN_LIMIT_DEGREES:g} "
                                              "degrees.")
                turn[AXES[axis]] += degrees
        turns.append((" ".join(words), turn))
    if not turns:
        raise GenAffectInputError(f"no head turns given; list some, e.g. '{STRAIGHT}, yaw -20, yaw 20'.")
    return turns


def with_head_turns(batch: ExpressionBatch, turns: list[tuple[str, np.ndarray]]) -> ExpressionBatch:
    """Every expression of ``batch`` once per turn (expression by expression, the turns in order), each turn added
    to the expression's own; labelled '<expression>, <turn>'."""
    rows = np.repeat(np.arange(len(batch)), len(turns))
    repeated = batch.rows(rows.tolist())
    added = np.tile(np.stack([turn for _, turn in turns]), (len(batch), 1))
    labels = [f"{batch.labels[row]}, {turns[index % len(turns)][0]}" for index, row in enumerate(rows)]
    return replace(repeated, labels=labels, head_turn=(repeated.filled("head_turn") + added).astype(np.float32))


@lru_cache(maxsize=1)
def _preset_sliders() -> tuple[tuple[str, np.ndarray], ...]:
    names = preset_names()
    return tuple((name, np.array([sliders_from_blendshapes(row)[s] for s in SLIDER_NAMES]))
                 for name, row in zip(names, presets(names, 1.0).blendshapes))


def preset_of_sliders(edits: dict[str, float], tolerance: float = 0.006) -> str | None:
    """The name of the first preset whose gallery slider values these are (the Editor keeps the name of a preset
    picked in its gallery until a slider moves), or None."""
    values = np.array([float(edits.get(name, 0.0)) for name in SLIDER_NAMES])
    for name, sliders in _preset_sliders():
        if np.abs(values - sliders).max() <= tolerance:
            return name
    return None


def apply_edits(batch: ExpressionBatch, edits: dict[str, float], intensity: float = 1.0) -> ExpressionBatch:
    """Add slider values (-1..1) to every expression, then scale by ``intensity``."""
    unknown = set(edits) - set(SLIDER_NAMES)
    if unknown:
        raise GenAffectInputError(f"unknown slider(s) {sorted(unknown)}.")
    blendshapes = batch.require("blendshapes", "GenAffect Expression Editor").copy()
    delta = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
    for slider in SLIDERS:
        value = float(edits.get(slider.name, 0.0))
        # a two-way slider below 0 drives its other shapes; a one-way slider below 0 relaxes its own
        targets, amount = (slider.subtracts, -value) if value < 0 and slider.subtracts else (slider.adds, value)
        for shape in targets:
            delta[BLENDSHAPE_INDEX[shape]] += amount
    blendshapes = np.clip((blendshapes + delta) * float(intensity), 0.0, 1.0)
    flame = None if batch.flame is None else _edit_flame(batch.flame, edits, intensity)
    estimator = batch.estimator_blendshapes
    if estimator is not None:  # the same edit as the estimator reads it: unreadable shapes do not move
        estimator = estimator_at_intensity(np.clip(estimator + estimator_space().gains * delta, 0.0, 1.0), intensity)
    return replace(batch, blendshapes=blendshapes.astype(np.float32), flame=flame, estimator_blendshapes=estimator)


def _edit_flame(flame: np.ndarray, edits: dict[str, float], intensity: float) -> np.ndarray:
    flame = flame.copy()
    coefficients = flame[:, FLAME_EXPRESSION]
    # Intensity above 1 exaggerates up to FLAME_EXPRESSION_LIMIT (or the input's own size, never shrunk), so chained
    # editors cannot grow a face out of the space the adapters were trained on; the log says when it limited.
    limit = np.maximum(np.abs(coefficients), FLAME_EXPRESSION_LIMIT)
    scaled = coefficients * float(intensity)
    bounded = np.clip(scaled, -limit, limit)
    if not np.array_equal(bounded, scaled):
        log.warning("GenAffect Expression Editor: intensity %.2f would push FLAME-55 expression coefficients to %.2f; "
                    "kept within %.1f (FLAME's +-3 standard deviations).", float(intensity),
                    float(np.abs(scaled).max()), float(limit.max()))
    flame[:, FLAME_EXPRESSION] = bounded
    # Which eyelid value is which side is not documented by SMIRK: both move by the mean blink edit.
    blink = (edits.get("blink_left", 0.0) + edits.get("blink_right", 0.0)) / 2
    flame[:, FLAME_EYELIDS] = np.clip(flame[:, FLAME_EYELIDS] + blink, 0.0, 1.0)
    jaw = flame[:, FLAME_JAW]
    jaw[:, 0] = np.maximum(jaw[:, 0] + edits.get("jaw_open", 0.0) * JAW_OPEN_RADIANS, 0.0)
    jaw[:, 1] = np.clip(jaw[:, 1] + edits.get("jaw_sideways", 0.0) * JAW_SIDE, -JAW_SIDE, JAW_SIDE)
    flame[:, FLAME_JAW] = jaw
    return flame.astype(np.float32)


def ease(t: np.ndarray, easing: str) -> np.ndarray:
    if easing == "linear":
        return t
    if easing == "ease in-out":
        return (1.0 - np.cos(np.pi * t)) / 2.0
    if easing == "ease in":
        return t * t
    if easing == "ease out":
        return 1.0 - (1.0 - t) ** 2
    raise GenAffectInputError(f"easing must be one of {EASINGS}, got {easing!r}.")


def _pair(a: ExpressionBatch, b: ExpressionBatch, name: str):
    """A's and B's arrays of one representation; estimator-space blendshapes on one side only are blended with
    the other side's blendshapes (an estimated expression's blendshapes are the estimator's reading)."""
    if name == "estimator_blendshapes" and (a.estimator_blendshapes is not None or b.estimator_blendshapes is not None):
        return a.estimator_or_blendshapes(), b.estimator_or_blendshapes()
    if name in ZERO_WHEN_MISSING and (getattr(a, name) is not None or getattr(b, name) is not None):
        return a.filled(name), b.filled(name)
    return getattr(a, name), getattr(b, name)


def _blend(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    # (1 - t) * a + t * b reproduces a at t = 0 and b at t = 1 exactly
    return ((1.0 - t) * a + t * b).astype(np.float32)


def interpolate(a: ExpressionBatch, b: ExpressionBatch, steps: int, easing: str = "linear") -> ExpressionBatch:
    """``steps`` expressions from A to B (endpoints included), for every pair of rows.

    A and B hold one expression each, or the same number (pairs row by row); a single one is
    paired with every row of the other. Only representations present in both are interpolated.
    """
    steps = checked_number("steps", steps, whole=True, low=2)  # the two endpoints at least
    if len(a) != len(b) and 1 not in (len(a), len(b)):
        raise GenAffectInputError(
            f"expression A has {len(a)} expressions and B has {len(b)}; give the same number, or one on either side."
        )
    shared = [name for name in ("blendshapes", "flame") if getattr(a, name) is not None and getattr(b, name) is not None]
    if not shared:
        raise GenAffectInputError("expressions A and B share no representation to interpolate (one has blendshapes "
                                  "only, the other FLAME-55 only); give both the same kind, e.g. through Apply "
                                  "Expression Mapping.")
    count = max(len(a), len(b))
    times = ease(np.linspace(0.0, 1.0, steps), easing)
    times[0], times[-1] = 0.0, 1.0
    labels, rows = [], {name: [] for name in ARRAYS}
    for pair in range(count):
        i, j = (pair if len(a) > 1 else 0), (pair if len(b) > 1 else 0)
        for step, t in enumerate(times):
            labels.append(f"{a.labels[i]} -> {b.labels[j]} {step}/{steps - 1}")
            for name in ARRAYS:
                first, second = _pair(a, b, name)
                if first is not None and second is not None:
                    rows[name].append(_blend(first[i], second[j], float(t)))
    return ExpressionBatch(labels=labels, **{name: np.stack(r) if r else None for name, r in rows.items()})


def parse_weights(text: str) -> list[float]:
    try:
        return [float(part) for part in split_list(text)]
    except ValueError as error:
        raise GenAffectInputError(f"weights must be numbers separated by commas, got {text!r}.") from error


def mix(batch: ExpressionBatch, weights: list[float], label: str = "") -> ExpressionBatch:
    """One expression: the weighted mean of the batch's rows (weights are normalised to sum 1)."""
    if len(weights) != len(batch):
        raise GenAffectInputError(f"{len(weights)} weight(s) for {len(batch)} expression(s); give one weight per expression.")
    weights_array = np.asarray(weights, dtype=np.float64)
    if np.any(weights_array < 0) or not math.isfinite(weights_array.sum()) or weights_array.sum() <= 0:
        raise GenAffectInputError(f"weights must be 0 or more with a positive sum, got {weights}.")
    weights_array /= weights_array.sum()
    mixed = {
        name: None if getattr(batch, name) is None
        else np.tensordot(weights_array, getattr(batch, name), axes=1)[None].astype(np.float32)
        for name in ARRAYS
    }
    if not label:
        label = " + ".join(f"{w:.2f} {n}" for w, n in zip(weights_array, batch.labels) if w > 0)
    return ExpressionBatch(labels=[label], **mixed)


def sliders_from_blendshapes(blendshapes: np.ndarray) -> dict[str, float]:
    """The slider values that come nearest one vector of blendshapes on a neutral face (the editor's gallery:
    start from a preset, then sculpt). Each slider takes the mean of the shapes it drives; a two-way slider the
    difference of its two sides. Shapes no slider drives (e.g. mouthRollLower) are lost."""
    values = {}
    for slider in SLIDERS:
        raised = float(np.mean([blendshapes[BLENDSHAPE_INDEX[s]] for s in slider.adds]))
        lowered = float(np.mean([blendshapes[BLENDSHAPE_INDEX[s]] for s in slider.subtracts])) if slider.subtracts else 0.0
        values[slider.name] = round(raised - lowered, 3)  # within -1..1: blendshapes are 0..1
    return values
