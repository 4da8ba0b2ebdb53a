"""The GA_EXPRESSION socket: a batch of N expressions in the representations GenAffect knows.

Each representation is an array over the whole batch or None. A missing representation is None -
never a silent zero vector - and a node that needs it says which node provides it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from ..errors import GenAffectInputError

log = logging.getLogger(__name__)

# MediaPipe FaceLandmarker's 52 blendshape categories in its output order. Index 0, "_neutral", is
# not a movement: it is kept so a vector is exactly MediaPipe's output, and ignored everywhere else
# (presets leave it 0). The other 51 are ARKit's names (ARKit's 52 less tongueOut); "Left" and
# "Right" are the subject's own sides.
NEUTRAL = "_neutral"
BLENDSHAPE_NAMES = (
    NEUTRAL, "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)
BLENDSHAPE_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}
NUM_BLENDSHAPES = len(BLENDSHAPE_NAMES)  # 52
MOVEMENT_NAMES = BLENDSHAPE_NAMES[1:]  # the 51 that describe a facial movement

# FLAME-55 as Arc2Face's Expression Adapter takes it: 50 expression coefficients, 2 eyelids, 3 jaw.
FLAME_EXPRESSION = slice(0, 50)
FLAME_EYELIDS = slice(50, 52)
FLAME_JAW = slice(52, 55)
FLAME_SIZE = 55
JAW_SIDE = 0.2  # SMIRK clamps the two sideways jaw values to +-0.2
# FLAME's expression coefficients are in standard deviations of the scans its basis was built from: +-3 covers them,
# so an edit (the Editor's intensity above 1) exaggerates up to this and no further.
FLAME_EXPRESSION_LIMIT = 3.0
BLENDSHAPE_SLACK = 1e-4  # float rounding of values computed in 0..1

# Which node fills each representation, for error messages.
PROVIDERS = {
    "blendshapes": "GenAffect Estimate Expression, GenAffect Expression Preset or GenAffect Expression Editor",
    "flame": "GenAffect Estimate Expression with SMIRK loaded, or GenAffect Apply Expression Mapping",
    "head_pose": "GenAffect Estimate Expression",
    "landmarks": "GenAffect Estimate Expression",
    "head_turn": "GenAffect Expression Editor (its head sliders)",
    "image_size": "GenAffect Estimate Expression",
}
# Representations carried row by row (in this order) besides the labels.
ARRAYS = ("blendshapes", "estimator_blendshapes", "flame", "head_pose", "landmarks", "head_turn", "image_size")
# Representations whose absence means "none of it" (zeros) rather than "unknown": batches without them mix with
# batches that have them (a head turn asked for on some expressions only).
ZERO_WHEN_MISSING = ("head_turn",)


@dataclass(eq=False)
class ExpressionBatch:
    """N expressions. Arrays are float32 with N rows; any representation may be None."""

    labels: list[str]
    blendshapes: np.ndarray | None = None  # (N, 52) in 0..1, BLENDSHAPE_NAMES order (index 0 = _neutral)
    flame: np.ndarray | None = None  # (N, 55)
    head_pose: np.ndarray | None = None  # (N, 3) yaw, pitch, roll in degrees
    landmarks: np.ndarray | None = None  # (N, 478, 3) normalised image coordinates
    # (N, 52): what the blendshape estimator (MediaPipe) reads on a face showing each expression, where that differs
    # from ``blendshapes``: presets carry their calibrated estimator-space targets here beside their FACS recipes.
    # None: ``blendshapes`` is already what the estimator reads (estimated expressions) or nothing better is known.
    estimator_blendshapes: np.ndarray | None = None
    # (N, 3) yaw, pitch, roll in degrees: a turn of the head asked for on top of the expression (the Editor's head
    # sliders), relative to the face it is applied to - unlike head_pose, which is where an estimated face looks.
    # Warp Expression turns the photo's head by it. None: no turn asked for.
    head_turn: np.ndarray | None = None
    # (N, 2) height and width in pixels of the image each row's landmarks were read on (they are normalised to it):
    # what turns them back into the face's true proportions (the expression judge needs them).
    image_size: np.ndarray | None = None

    def __post_init__(self):
        count = len(self.labels)
        if count == 0:  # every node downstream would silently do nothing
            raise GenAffectInputError("an expression batch needs at least one expression; the node that made it "
                                      "found none (e.g. a Mix or mapping of an empty selection).")
        if self.estimator_blendshapes is not None and self.blendshapes is None:
            raise GenAffectInputError("estimator-space blendshapes come beside blendshapes, never alone.")
        widths = {"blendshapes": (NUM_BLENDSHAPES,), "estimator_blendshapes": (NUM_BLENDSHAPES,),
                  "flame": (FLAME_SIZE,), "head_pose": (3,), "landmarks": None, "head_turn": (3,),
                  "image_size": (2,)}
        for name, width in widths.items():
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float32)
            if value.shape[0] != count or (width is not None and value.shape[1:] != width):
                raise GenAffectInputError(
                    f"expression {name} has shape {list(value.shape)}; expected {count} rows"
                    + (f" of {width[0]} values." if width else ".")
                )
            if not np.all(np.isfinite(value)):
                raise GenAffectInputError(f"expression {name} contains NaN or infinite values.")
            if name == "image_size" and np.any(value < 1):
                raise GenAffectInputError(f"expression image sizes must be whole pixels of at least 1, got {value.min()}.")
            setattr(self, name, value)
        self._check_ranges()

    def _check_ranges(self) -> None:
        """The stated rule: blendshapes outside 0..1 are refused (they have no meaning there); FLAME-55 outside
        SMIRK's own limits (eyelids 0..1, jaw opening >= 0, jaw sideways within +-0.2) is brought inside them,
        as SMIRK's output is, with a warning saying by how much."""
        for name in ("blendshapes", "estimator_blendshapes"):
            value = getattr(self, name)
            if value is None:
                continue
            low, high = float(value.min()), float(value.max())
            if low < -BLENDSHAPE_SLACK or high > 1.0 + BLENDSHAPE_SLACK:
                raise GenAffectInputError(f"{name.replace('_', ' ')} run from {low:.3g} to {high:.3g}; each is a "
                                          "movement strength in 0..1. Scale or clip them in the node that made them.")
            setattr(self, name, np.clip(value, 0.0, 1.0))
        if self.flame is not None:
            limited = self.flame.copy()
            limited[:, FLAME_EYELIDS] = np.clip(limited[:, FLAME_EYELIDS], 0.0, 1.0)
            limited[:, FLAME_JAW.start] = np.maximum(limited[:, FLAME_JAW.start], 0.0)
            limited[:, FLAME_JAW.start + 1:] = np.clip(limited[:, FLAME_JAW.start + 1:], -JAW_SIDE, JAW_SIDE)
            moved = float(np.abs(limited - self.flame).max())
            if moved > 0:
                log.warning("GenAffect: FLAME-55 eyelid/jaw values outside SMIRK's limits were brought inside them "
                            "(by up to %.3g).", moved)
                self.flame = limited

    def __len__(self) -> int:
        return len(self.labels)

    def require(self, representation: str, node: str) -> np.ndarray:
        """The array for ``representation``, or an error naming the node that provides it."""
        value = getattr(self, representation)
        if value is None:
            raise GenAffectInputError(
                f"{node} needs {representation.replace('_', ' ')}, but the incoming expression has none. "
                f"It comes from {PROVIDERS[representation]}."
            )
        return value

    def estimator_space(self, node: str) -> np.ndarray:
        """(N, 52) blendshapes as the estimator reads them, to compare with a re-estimated face or to feed a model
        trained on estimated blendshapes (the DiT adapter): the estimator-space targets where the batch carries
        them (presets), else its blendshapes (estimated expressions are the estimator's own reading)."""
        if self.estimator_blendshapes is not None:
            return self.estimator_blendshapes
        return self.require("blendshapes", node)

    def filled(self, representation: str) -> np.ndarray | None:
        """The array, with zeros standing in where a ZERO_WHEN_MISSING representation is absent."""
        value = getattr(self, representation)
        if value is None and representation in ZERO_WHEN_MISSING:
            return np.zeros((len(self), 3), np.float32)
        return value

    def estimator_or_blendshapes(self) -> np.ndarray | None:
        """Like :meth:`estimator_space` but None, not an error, without blendshapes."""
        return self.blendshapes if self.estimator_blendshapes is None else self.estimator_blendshapes

    def rows(self, indices) -> "ExpressionBatch":
        """A new batch with the given rows, in that order."""
        indices = list(indices)
        pick = lambda a: None if a is None else a[indices]  # noqa: E731
        return ExpressionBatch(labels=[self.labels[i] for i in indices],
                               **{name: pick(getattr(self, name)) for name in ARRAYS})


def concatenate(batches: list[ExpressionBatch]) -> ExpressionBatch:
    """One batch from several; a representation survives only if every batch has it. Estimator-space
    blendshapes survive when any batch has them: the others' blendshapes stand in (see ``estimator_space``)."""
    if not batches:
        raise GenAffectInputError("no expressions to combine.")

    def joined(name):
        parts = [getattr(b, name) for b in batches]
        if name == "estimator_blendshapes":
            if all(p is None for p in parts):
                return None
            parts = [b.estimator_or_blendshapes() for b in batches]
        if name in ZERO_WHEN_MISSING:
            if all(p is None for p in parts):
                return None
            parts = [b.filled(name) for b in batches]
        if any(p is None for p in parts):
            return None
        return np.concatenate(parts, axis=0)

    return ExpressionBatch(labels=[label for b in batches for label in b.labels], **{name: joined(name) for name in ARRAYS})


def split_list(text: str) -> list[str]:
    """Items of a list typed into a text box: separated by commas, semicolons or new lines. The browser cuts
    lists by the same rule (``js/expression_list.js``; a test runs both on the same text)."""
    return [part.strip() for part in re.split(r"[,;\n]", text) if part.strip()]


def blendshape_vector(values: dict[str, float]) -> np.ndarray:
    """A (52,) vector from ``{name: value}``; unknown names are an error, unnamed shapes are 0."""
    vector = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
    for name, value in values.items():
        if name not in BLENDSHAPE_INDEX:
            raise GenAffectInputError(f"unknown blendshape {name!r}; expected one of MediaPipe's 52 names.")
        vector[BLENDSHAPE_INDEX[name]] = value
    return vector
