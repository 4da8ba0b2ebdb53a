"""An expression track from a video: one person followed across the frames, read on every frame, frames without
them bridged, the curves smoothed without lag.

- Following: every face of a frame is embedded (ArcFace) and the one most like the person is kept - the given
  identity, or the first frame's chosen face - so a cut to another person or a second face in view is not
  taken for them.
- Gaps: frames where the person is not found (or the landmarker reads nothing) are filled by straight lines
  between the nearest frames that have them (held at the ends), and reported.
- Smoothing: the One-Euro filter (Casiez, Roussel & Vogel, CHI 2012): an exponential smoother whose cutoff rises
  with the signal's speed, so it steadies a still face and follows a fast move. Run causally it still trails a
  sudden change (a keyframe) by a few frames; run forward and backward and averaged, the two lags cancel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import GenAffectInputError, NoFaceFoundError
from ..face.face_analyzer import FaceAnalyzer
from ..face.face_listing import list_faces
from ..face.identity import Identity
from .batch import ExpressionBatch
from .expression_estimator import ExpressionEstimator
from .face_reading import read_faces

SMOOTHED = ("blendshapes", "head_pose", "landmarks", "flame")  # what a track carries, frame by frame


@dataclass(frozen=True)
class OneEuro:
    """The One-Euro filter's settings: ``min_cutoff`` (Hz) steadies a still signal (lower: smoother), ``beta`` lets
    the cutoff rise with speed (higher: less lag on fast moves), ``derivative_cutoff`` (Hz) smooths the speed."""

    min_cutoff: float = 1.5
    beta: float = 0.5
    derivative_cutoff: float = 1.0

    def __post_init__(self):
        if not (self.min_cutoff > 0 and self.derivative_cutoff > 0 and self.beta >= 0):
            raise GenAffectInputError(f"One-Euro settings must be positive (min_cutoff {self.min_cutoff}, beta "
                                      f"{self.beta}, derivative_cutoff {self.derivative_cutoff}).")


def _alpha(cutoff, rate: float):
    """The exponential smoother's weight for a cutoff (Hz) at ``rate`` samples per second."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau * rate)


def one_euro(signal: np.ndarray, rate: float, settings: OneEuro = OneEuro()) -> np.ndarray:
    """The causal One-Euro filter over (T, ...) samples taken ``rate`` times a second, every value on its own."""
    values = np.asarray(signal, np.float64)
    if values.shape[0] == 0:
        return values.copy()
    if rate <= 0:
        raise GenAffectInputError(f"the frame rate must be above 0, got {rate}.")
    out = np.empty_like(values)
    previous = out[0] = values[0]
    speed = np.zeros_like(values[0])
    derivative_alpha = _alpha(settings.derivative_cutoff, rate)
    for t in range(1, values.shape[0]):
        raw_speed = (values[t] - previous) * rate
        speed = derivative_alpha * raw_speed + (1.0 - derivative_alpha) * speed
        alpha = _alpha(settings.min_cutoff + settings.beta * np.abs(speed), rate)
        previous = out[t] = alpha * values[t] + (1.0 - alpha) * previous
    return out


def smooth(signal: np.ndarray, rate: float, settings: OneEuro = OneEuro(), two_way: bool = True) -> np.ndarray:
    """One-Euro smoothing; ``two_way``: the mean of a forward and a backward pass, whose lags cancel (a sudden
    change stays where it happens)."""
    forward = one_euro(signal, rate, settings)
    if not two_way:
        return forward
    backward = one_euro(np.asarray(signal)[::-1], rate, settings)[::-1]
    return 0.5 * (forward + backward)


@dataclass(frozen=True)
class Gap:
    start: int  # first frame without the face
    end: int  # last one

    @property
    def frames(self) -> int:
        return self.end - self.start + 1


def gaps_of(present: np.ndarray) -> list[Gap]:
    """The runs of frames where ``present`` is False."""
    gaps, start = [], None
    for index, here in enumerate(list(np.asarray(present, bool)) + [True]):
        if not here and start is None:
            start = index
        elif here and start is not None:
            gaps.append(Gap(start, index - 1))
            start = None
    return gaps


def bridge(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """(T, ...) values with the frames where ``present`` is False filled by straight lines between the nearest
    present frames, held at the ends. Needs at least one present frame."""
    present = np.asarray(present, bool)
    if not present.any():
        raise GenAffectInputError("no frame has the face, so there is nothing to bridge from.")
    values = np.asarray(values, np.float64)
    known = np.flatnonzero(present)
    flat = values.reshape(len(values), -1).copy()
    frames = np.arange(len(values))
    for column in range(flat.shape[1]):
        flat[:, column] = np.interp(frames, known, flat[known, column])
    return flat.reshape(values.shape)


def jitter(values: np.ndarray) -> float:
    """How much a curve shakes: the root mean square of its second difference (frame-to-frame acceleration),
    over every value; 0 for a straight line. Needs three frames."""
    values = np.asarray(values, np.float64).reshape(len(values), -1)
    if len(values) < 3:
        return float("nan")
    return float(np.sqrt(np.mean((values[2:] - 2.0 * values[1:-1] + values[:-2]) ** 2)))


@dataclass(eq=False)
class ExpressionTrack:
    """What a video gave: the smoothed expressions (every ``step``-th frame), what was read before smoothing, and
    where the person was missing."""

    expression: ExpressionBatch  # smoothed, bridged, every step-th frame
    raw: dict[str, np.ndarray | None]  # per representation (T, ...) as read, NaN where missing
    present: np.ndarray  # (T,) frames where the person was found and read
    similarities: np.ndarray  # (T,) ArcFace cosine of the kept face to the person (NaN where none)
    rate: float
    step: int
    frames: list[int]  # the video frame of each expression row
    faces_per_frame: list[int] = field(default_factory=list)
    smoothed_all: dict = field(default_factory=dict)  # every frame, bridged and smoothed (for curves and jitter)

    @property
    def gaps(self) -> list[Gap]:
        return gaps_of(self.present)

    def jitter_report(self) -> dict[str, dict[str, float]]:
        """Jitter (see :func:`jitter`) of blendshapes and head pose, as read (over the frames that have the face,
        bridged) and smoothed, on every frame."""
        out = {}
        for name in ("blendshapes", "head_pose"):
            raw = self.raw.get(name)
            if raw is None:
                continue
            before = bridge(raw, self.present)
            after = self.smoothed_all[name]
            out[name] = {"before": jitter(before), "after": jitter(after)}
        return out

    def report(self) -> str:
        count = len(self.present)
        lines = [f"{int(self.present.sum())} of {count} frame(s) have the person ({count / self.rate:.1f} s at "
                 f"{self.rate:g} fps); {len(self.frames)} expression(s), every {self.step} frame(s)"]
        for gap in self.gaps:
            lines.append(f"  frames {gap.start}-{gap.end} ({gap.frames} frame(s), {gap.frames / self.rate:.2f} s): "
                         "no face of the person; bridged")
        found = self.similarities[np.isfinite(self.similarities)]
        if len(found):
            lines.append(f"  cosine to the person: min {found.min():.2f}, mean {found.mean():.2f}")
        crowded = sum(1 for n in self.faces_per_frame if n > 1)
        if crowded:
            lines.append(f"  {crowded} frame(s) show more than one face; the person was picked by identity")
        for name, values in self.jitter_report().items():
            unit = " degrees" if name == "head_pose" else ""
            lines.append(f"  jitter of {name.replace('_', ' ')} (RMS frame-to-frame acceleration){unit}: "
                         f"{values['before']:.4f} as read, {values['after']:.4f} smoothed")
        return "\n".join(lines)


def follow_person(analyzer: FaceAnalyzer, frames_rgb: list[np.ndarray], identity: Identity | None = None,
                  min_similarity: float = 0.35, order: str = "largest", on_progress=None):
    """Per frame, the box of the person's face (None where they are not found), its cosine to them, and the number
    of faces in the frame. The person is ``identity``, or else the first frame's first face in ``order``."""
    listed = list_faces(analyzer, frames_rgb, order, on_progress)
    if identity is not None:
        reference = identity.one_person("Expression Track")
    else:
        first = next((faces[0] for faces in listed if faces), None)
        if first is None:
            raise NoFaceFoundError(f"No face in any of the {len(frames_rgb)} frame(s); use a video that shows a "
                                   "face at least ~64 px wide.")
        reference = first.embedding
    boxes, similarities = [], np.full(len(frames_rgb), np.nan)
    for index, faces in enumerate(listed):
        scored = [(float(face.embedding @ reference), face) for face in faces]
        scored = [(cosine, face) for cosine, face in scored if cosine >= min_similarity]
        if scored:
            cosine, face = max(scored, key=lambda pair: pair[0])
            boxes.append(face.box)
            similarities[index] = cosine
        else:
            boxes.append(None)
    return boxes, similarities, [len(faces) for faces in listed]


def track_expressions(analyzer: FaceAnalyzer, estimator: ExpressionEstimator, frames_rgb: list[np.ndarray],
                      rate: float, *, identity: Identity | None = None, min_similarity: float = 0.35,
                      settings: OneEuro = OneEuro(), two_way: bool = True, step: int = 1,
                      max_gap_seconds: float = 1.0, on_progress=None) -> ExpressionTrack:
    """Follow the person through ``frames_rgb`` (RGB uint8, ``rate`` frames a second), read their expression on
    every frame, bridge and smooth the curves; the expressions of every ``step``-th frame."""
    if step < 1:
        raise GenAffectInputError(f"step must be 1 or more, got {step}.")
    boxes, similarities, crowd = follow_person(analyzer, frames_rgb, identity, min_similarity, on_progress=on_progress)
    wanted = [(index, box) for index, box in enumerate(boxes) if box is not None]
    readings = read_faces(estimator, frames_rgb, wanted)
    count = len(frames_rgb)
    present = np.zeros(count, bool)
    raw: dict[str, np.ndarray | None] = {}
    for (index, _), reading in zip(wanted, readings):
        if reading is None:
            continue
        present[index] = True
        for name in SMOOTHED:
            value = reading[name]
            if value is None:
                continue
            if name not in raw:
                raw[name] = np.full((count, *np.shape(value)), np.nan, np.float32)
            raw[name][index] = value
    for name in SMOOTHED:
        raw.setdefault(name, None)
    if not present.any():
        raise NoFaceFoundError(f"The person's face was not read on any of the {count} frame(s) (found on "
                               f"{len(wanted)}, the landmarker read none of those); use a video where the face is "
                               "visible and at least ~64 px wide.")
    longest = max((gap.frames for gap in gaps_of(present)), default=0)
    if max_gap_seconds > 0 and longest / rate > max_gap_seconds:
        raise GenAffectInputError(
            f"the person is missing for {longest} frames in a row ({longest / rate:.2f} s), longer than "
            f"max_gap_seconds ({max_gap_seconds:g}); a guess over that long means little. Trim the video, or raise "
            "max_gap_seconds (0: no limit).")
    smoothed = {name: None if value is None else smooth(bridge(value, present), rate, settings, two_way)
                for name, value in raw.items()}
    if smoothed["blendshapes"] is not None:
        smoothed["blendshapes"] = np.clip(smoothed["blendshapes"], 0.0, 1.0)  # bridging and smoothing stay in 0..1
    rows = list(range(0, count, step))
    expression = ExpressionBatch(
        labels=[f"frame {index}" for index in rows],
        **{name: None if value is None else value[rows].astype(np.float32) for name, value in smoothed.items()})
    return ExpressionTrack(expression, raw, present, similarities, float(rate), step, rows, crowd, smoothed)
