"""The landmark judge: which expression a face shows, read from MediaPipe's 478 landmarks, relative to the
person's own reference photo when its landmarks are known.

GenAffect always has the person's photo, so the judge reads the *change* from it: the face's landmarks are
pose-normalised (a 3-D similarity onto a template, fitted on the landmarks that move least with expression),
moved onto the reference photo's the same way, and the difference is classified. Photos of one person differ by
expression; photos of different people differ by face shape, which this removes. Without the reference photo's
landmarks the face is read alone (a second head of the same file, less accurate across sources). Where the face and
its reference photo look taken apart - the head turned from the photo's by more than the file's gate
(``meta["gate"]``), or the landmarks that move least with expression not fitting the photo's (another lens, another
year) - a third head reads it, trained on in-the-wild photo pairs too. Where the file says so
(``meta["read_mirrored"]``) the heads that read the change from the photo read each pair as seen and in a mirror and
average the two: an expression reads the same either way, and the average evens out the left-right slant a few
training people leave in a head.

The classifier is data, ``models/data/expression_judge.npz`` (numpy arrays and a JSON ``meta`` string: classes,
settings, provenance of the labelled photos it was trained on, its evaluation), written by
``tools/train_expression_judge.py``: per head the feature parts, a standardisation and dense layers (ReLU between,
softmax at the end). It is read with numpy and checked before use.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from ..errors import GenAffectInputError, ModelFileError
from ..expression.batch import ExpressionBatch
from ..expression.expression_library import library
from ..files.packaged_data import data_path

log = logging.getLogger(__name__)

JUDGE_FILE = "expression_judge.npz"
FORMAT = "genaffect.expression_judge"
MAX_BYTES = 4_000_000  # a judge file is well under 1 MB; a bigger one is not ours
NUM_LANDMARKS = 478
HEADS = ("relative", "alone")
# optional: the head for faces taken apart from their reference photo, beyond meta["gate"]: "turned_degrees" (the
# head's turn from the photo's) or "misfit" (RMS of the rigid landmarks after alignment, in template units)
FAR_HEAD = "relative_far"
PARTS = ("delta", "shape", "reference_shape")
# PixelSmile's category names -> the judge's class names (presets name their categories PixelSmile's way).
PIXELSMILE_CLASS = {"angry": "angry", "contempt": "contempt", "disgust": "disgusted", "fear": "fearful",
                    "happy": "happy", "sad": "sad", "surprised": "surprised", "neutral": "neutral"}
# "expression copied" needs the judge this sure that the face shows the reference photo's class: the lowest value
# (in steps of 0.05) that flagged at most 5 % of genuine expression photos of each posed source, on half of their
# people (tools/measure_judge.py; rates measured on the other half, docs/judge.md).
COPIED_PROBABILITY = 0.75


# --------------------------------------------------------------------------------------------------- geometry
def to_pixels(landmarks: np.ndarray, image_size: np.ndarray) -> np.ndarray:
    """(N, 478, 3) landmarks normalised to their image -> the face's true proportions (pixels; MediaPipe scales z
    like x)."""
    size = np.asarray(image_size, dtype=np.float64).reshape(-1, 2)
    points = np.asarray(landmarks, dtype=np.float64).copy()
    points[..., 0] *= size[:, None, 1]
    points[..., 1] *= size[:, None, 0]
    points[..., 2] *= size[:, None, 1]
    return points


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched least-squares 3-D similarity (Umeyama): scale s (N,), rotation R (N, 3, 3) and translation t (N, 3)
    with s R source + t ~ target. ``source`` (N, P, 3); ``target`` (N, P, 3) or (P, 3)."""
    source = np.asarray(source, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), source.shape)
    source_mean, target_mean = source.mean(axis=1, keepdims=True), target.mean(axis=1, keepdims=True)
    a, b = source - source_mean, target - target_mean
    u, sigma, vt = np.linalg.svd(np.einsum("npi,npj->nij", b, a) / source.shape[1])
    sign = np.ones((len(source), 3))
    sign[np.linalg.det(u) * np.linalg.det(vt) < 0, -1] = -1
    rotation = u @ (sign[:, :, None] * vt)
    scale = (sigma * sign).sum(axis=1) / ((a ** 2).sum(axis=(1, 2)) / source.shape[1])
    translation = target_mean[:, 0] - scale[:, None] * np.einsum("nij,nj->ni", rotation, source_mean[:, 0])
    return scale, rotation, translation


def align(points: np.ndarray, target: np.ndarray, rigid: np.ndarray) -> np.ndarray:
    """Each face of ``points`` (N, 478, 3) moved by the similarity that best maps its ``rigid`` landmarks onto
    ``target``'s ((478, 3), or one target per face)."""
    scale, rotation, translation = similarity(points[:, rigid], np.asarray(target)[..., rigid, :])
    return scale[:, None, None] * np.einsum("npj,nij->npi", points, rotation) + translation[:, None]


def turned_degrees(points: np.ndarray, references: np.ndarray, rigid: np.ndarray) -> np.ndarray:
    """(N,) how far each face's head is turned from its reference photo's, out of the image plane, in degrees: the
    tilt of the view axis under the rotation that best maps its ``rigid`` landmarks onto the photo's (both
    (N, 478, 3) in pixels). A roll within the image plane does not count: the alignment undoes it exactly."""
    _, rotation, _ = similarity(points[:, rigid], np.asarray(references)[:, rigid])
    return np.degrees(np.arccos(np.clip(rotation[:, 2, 2], -1.0, 1.0)))


# ------------------------------------------------------------------------------------------------------ model
@dataclass(frozen=True)
class Head:
    parts: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weights (in, out), bias (out,)), ReLU between

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        x = (features - self.mean) / self.scale
        for i, (weights, bias) in enumerate(self.layers):
            x = x @ weights + bias
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        x = np.exp(x - x.max(axis=1, keepdims=True))
        return x / x.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Reading:
    """What the judge read on N faces."""

    judge: str  # which head, in words
    classes: tuple[str, ...]
    probabilities: np.ndarray  # (N, classes)
    far: np.ndarray | None = None  # (N,) read by the far head: turned from, or not fitting, a reference photo

    def taken_apart(self, row: int) -> bool:
        """Was this face read as taken apart from its reference photo (by the far head)?"""
        return self.far is not None and bool(self.far[row])

    def probabilities_of(self, row: int) -> dict[str, float]:
        return {name: round(float(p), 4) for name, p in zip(self.classes, self.probabilities[row])}

    def top(self, row: int) -> tuple[str, float]:
        best = int(np.argmax(self.probabilities[row]))
        return self.classes[best], float(self.probabilities[row, best])

    def probability(self, row: int, classes) -> float:
        return float(sum(self.probabilities[row, self.classes.index(c)] for c in classes if c in self.classes))


class LandmarkJudge:
    """The classifier of ``expression_judge.npz``: class probabilities of faces from their landmarks."""

    def __init__(self, meta: dict, template: np.ndarray, rigid: np.ndarray, subset: np.ndarray,
                 heads: dict[str, Head], path: str = ""):
        self.meta, self.template, self.rigid, self.subset, self.heads = meta, template, rigid, subset, heads
        self.classes = tuple(meta["classes"])
        self.path = path
        # beyond this turn of the head from the reference photo, or this misfit, the far head reads the face
        self.gate = float(meta["gate"]["turned_degrees"]) if FAR_HEAD in heads else None
        self.misfit_gate = float(meta["gate"]["misfit"]) if FAR_HEAD in heads else None
        self.read_mirrored = bool(meta.get("read_mirrored", False))

    @classmethod
    def from_file(cls, path: str) -> LandmarkJudge:
        return cls(*_read(path), path=path)

    # ------------------------------------------------------------------ features
    def canonical(self, landmarks: np.ndarray, image_size: np.ndarray) -> np.ndarray:
        """Pose-normalised landmarks (N, 478, 3) in the template's frame."""
        return align(to_pixels(landmarks, image_size), self.template, self.rigid)

    def features(self, head: str, faces: np.ndarray, references: np.ndarray | None) -> np.ndarray:
        """One feature row per face from canonical landmarks (and the reference photo's, one per face)."""
        columns = []
        for part in self.heads[head].parts:
            if part == "delta":
                moved = align(faces, references, self.rigid)
                columns.append((moved - references)[:, self.subset].reshape(len(faces), -1))
            elif part == "shape":
                columns.append((faces - self.template)[:, self.subset].reshape(len(faces), -1))
            elif part == "reference_shape":
                columns.append((references - self.template)[:, self.subset].reshape(len(faces), -1))
        return np.hstack(columns)

    def head_probabilities(self, head: str, faces: np.ndarray, references: np.ndarray | None) -> np.ndarray:
        """(N, classes) of one head for canonical faces (and their canonical reference photos); with
        ``read_mirrored`` and reference photos, the mean of the pairs as seen and as seen in a mirror. The face alone
        is not: its features compare it with the template, whose mirror image is not itself (MediaPipe's twins are
        matched in the image plane, so a flip moves a few points in depth; read mirrored, the alone head lost 10
        points on real photos)."""
        probabilities = self.heads[head].probabilities(self.features(head, faces, references))
        if self.read_mirrored and references is not None:
            mirrored = self.features(head, self.mirrored(faces), self.mirrored(references))
            probabilities = (probabilities + self.heads[head].probabilities(mirrored)) / 2
        return probabilities

    # ------------------------------------------------------------------ reading
    def read_landmarks(self, landmarks: np.ndarray, image_size: np.ndarray, reference_landmarks: np.ndarray | None = None,
                       reference_size: np.ndarray | None = None) -> Reading:
        """Probabilities of N faces, relative to one reference photo (its (478, 3) landmarks and image size) when
        given, else each face alone."""
        points = to_pixels(landmarks, image_size)
        faces = align(points, self.template, self.rigid)
        if reference_landmarks is None:
            return Reading(self.describe("alone"), self.classes, self.head_probabilities("alone", faces, None))
        photo = to_pixels(np.asarray(reference_landmarks)[None], np.asarray(reference_size)[None])
        photos = np.repeat(photo, len(faces), axis=0)
        references = align(photos, self.template, self.rigid)
        far = self.far(faces, references, turned_degrees(points, photos, self.rigid))
        probabilities = self._pair_probabilities(faces, references, far)
        return Reading(self.describe("relative", int(far.sum()), len(faces)), self.classes, probabilities, far)

    def misfit(self, faces: np.ndarray, references: np.ndarray) -> np.ndarray:
        """(N,) RMS distance of the rigid landmarks of canonical faces aligned onto their canonical reference
        photos (template units): small between photos of one session, large between photos taken apart."""
        moved = align(faces, references, self.rigid)
        return np.sqrt(((moved - references)[:, self.rigid] ** 2).sum(axis=-1).mean(axis=1))

    def far(self, faces: np.ndarray, references: np.ndarray, turned: np.ndarray | None) -> np.ndarray:
        """Which faces the far head reads: turned from their reference photo, or misfitting it, beyond the gate."""
        if self.gate is None:
            return np.zeros(len(faces), bool)
        far = self.misfit(faces, references) > self.misfit_gate
        return far if turned is None else far | (np.asarray(turned) > self.gate)

    def relative_probabilities(self, faces: np.ndarray, references: np.ndarray,
                               turned: np.ndarray | None = None) -> np.ndarray:
        """(N, classes) for canonical faces, each relative to its canonical reference photo (trained on neutral
        reference photos: a face like its photo reads as neutral). ``turned`` (N,): degrees each face's head is
        turned from its photo (:func:`turned_degrees`); beyond the gate (or misfitting) the far head reads it."""
        return self._pair_probabilities(faces, references, self.far(faces, references, turned))

    def _pair_probabilities(self, faces: np.ndarray, references: np.ndarray, far: np.ndarray) -> np.ndarray:
        """Each pair read by one head: the far head where ``far``, the relative head elsewhere."""
        probabilities = np.empty((len(faces), len(self.classes)))
        for head, rows in (("relative", ~far), (FAR_HEAD, far)):
            if rows.any():
                probabilities[rows] = self.head_probabilities(head, faces[rows], references[rows])
        return probabilities

    def read(self, faces: ExpressionBatch, reference: ExpressionBatch | None = None) -> Reading:
        """The judge's reading of estimated faces (Estimate Expression's batch, with landmarks and image sizes),
        relative to the reference photo(s) when their landmarks are given: the mean of the readings relative to
        each reference photo."""
        landmarks, size = _landmarks_of(faces, "the judged faces")
        if not _has_landmarks(reference):
            return self.read_landmarks(landmarks, size)
        ref_landmarks, ref_sizes = _landmarks_of(reference, "reference_expression")
        readings = [self.read_landmarks(landmarks, size, ref_landmarks[i], ref_sizes[i]) for i in range(len(reference))]
        judge = readings[0].judge if len({r.judge for r in readings}) == 1 else self.describe("relative", -1, 0)
        far = np.any([r.far for r in readings], axis=0)  # taken apart from at least one of the photos
        return Reading(judge, self.classes, np.mean([r.probabilities for r in readings], axis=0), far)

    def reference_class(self, reference: ExpressionBatch | None) -> str | None:
        """The class the judge reads on the reference photo(s) themselves, the way it reads the faces: relative to
        the photo (a face that shows the photo's expression reads as this class); None without their landmarks."""
        if not _has_landmarks(reference):
            return None
        return self.classes[int(np.argmax(self.read(reference, reference).probabilities.mean(axis=0)))]

    def shape_distances(self, faces: ExpressionBatch, reference: ExpressionBatch | None,
                        image_indices: list[int]) -> dict[int, float]:
        """Per face (keyed by its image index): the RMS distance of its pose-normalised landmarks to the nearest
        reference photo's, or to that photo's mirror image, in units of the template's size - near 0 for a copy
        of the photo, re-encoded, resized, cropped or mirrored. Empty without the reference photo's landmarks."""
        if not _has_landmarks(reference):
            return {}
        landmarks, size = _landmarks_of(faces, "the judged faces")
        ref_landmarks, ref_sizes = _landmarks_of(reference, "reference_expression")
        candidates = self.canonical(landmarks, size)
        photos = self.canonical(ref_landmarks, ref_sizes)
        photos = np.concatenate([photos, self.mirrored(photos)])
        best = np.full(len(candidates), np.inf)
        for photo in photos:
            moved = align(candidates, photo, self.rigid)
            rms = np.sqrt(((moved - photo)[:, self.subset] ** 2).sum(axis=-1).mean(axis=1))
            best = np.minimum(best, rms)
        return {index: float(distance) for index, distance in zip(image_indices, best)}

    def mirrored(self, faces: np.ndarray) -> np.ndarray:
        """Canonical faces as seen in a mirror: each landmark takes its mirror twin's place, x flipped about the
        template's midline."""
        mirrored = faces[:, self.mirror_order].copy()
        mirrored[..., 0] = 2 * self.midline_x - mirrored[..., 0]
        return mirrored

    @cached_property
    def _twins(self) -> tuple[np.ndarray, float]:
        return mirror_twins(self.template)

    @property
    def mirror_order(self) -> np.ndarray:
        return self._twins[0]

    @property
    def midline_x(self) -> float:
        return self._twins[1]

    def describe(self, head: str, far: int = 0, faces: int = 0) -> str:
        """The judge in words; ``far``: how many of the ``faces`` the far head read (-1: some, against some photos)."""
        if head != "relative":
            return "landmark judge, face alone (connect reference_expression to read it relative to the photo)"
        text = "landmark judge, relative to the reference photo"
        if far:
            which = "some faces" if far < 0 else f"{far} of {faces} faces"
            text += (f" ({which} turned more than {self.gate:.0f} degrees from the photo or not fitting its face: "
                     "read by the head trained on photos taken elsewhere too; 'expression copied' is not judged "
                     "for them)")
        return text


def mirror_twins(template: np.ndarray) -> tuple[np.ndarray, float]:
    """Each landmark's mirror twin (the nearest point of the template flipped about its midline) and the midline's
    x: MediaPipe's mesh is symmetric, so the twins are its left-right pairs."""
    midline = [1, 4, 5, 6, 168, 197, 195, 2, 0, 13, 14, 17, 152, 10, 151, 9, 8]  # points on the face's midline
    x0 = float(template[midline, 0].mean())
    flipped = template.copy()
    flipped[:, 0] = 2 * x0 - flipped[:, 0]
    distances = ((flipped[:, None, :2] - template[None, :, :2]) ** 2).sum(axis=-1)
    return distances.argmin(axis=1), x0


def _has_landmarks(batch: ExpressionBatch | None) -> bool:
    return batch is not None and batch.landmarks is not None and batch.image_size is not None


def _landmarks_of(batch: ExpressionBatch, what: str) -> tuple[np.ndarray, np.ndarray]:
    if batch.landmarks is None or batch.image_size is None:
        raise GenAffectInputError(f"the expression judge needs the landmarks and image sizes of {what}: they come from "
                                  "GenAffect Estimate Expression.")
    if batch.landmarks.shape[1:] != (NUM_LANDMARKS, 3):
        raise GenAffectInputError(f"{what} carry landmarks of shape {list(batch.landmarks.shape[1:])}; the judge reads "
                                  f"MediaPipe's {NUM_LANDMARKS} x 3.")
    return batch.landmarks, batch.image_size


def _read(path: str):
    """Read and check a judge file; every problem is an error naming it."""
    def fail(what):
        raise ModelFileError(f"{path}: {what}. Reinstall GenAffect, or write the file again with "
                             "tools/train_expression_judge.py.")

    if not os.path.isfile(path):
        fail("the expression judge's data file is missing")
    if os.path.getsize(path) > MAX_BYTES:
        fail(f"{os.path.getsize(path):,} bytes is far more than a judge file holds")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{path} is not a readable judge file ({error}).") from error
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, ValueError) as error:
        raise ModelFileError(f"{path}: no readable 'meta' JSON ({error}).") from error
    if meta.get("format") != FORMAT:
        fail(f"format {meta.get('format')!r}, expected {FORMAT!r}")
    classes = meta.get("classes")
    if not (isinstance(classes, list) and len(classes) >= 2 and len(set(classes)) == len(classes)
            and "neutral" in classes):
        fail(f"classes {classes!r} are not a list of distinct names with 'neutral' (a face like its photo)")
    for key in ("template", "rigid", "subset"):
        if key not in arrays:
            fail(f"no '{key}' array")
    template, rigid, subset = arrays["template"].astype(np.float64), arrays["rigid"], arrays["subset"]
    if template.shape != (NUM_LANDMARKS, 3) or not np.all(np.isfinite(template)):
        fail(f"template of shape {template.shape}, expected ({NUM_LANDMARKS}, 3) finite values")
    for name, indices, least in (("rigid", rigid, 4), ("subset", subset, 1)):
        if indices.ndim != 1 or indices.dtype.kind not in "iu" or len(indices) < least \
                or indices.min() < 0 or indices.max() >= NUM_LANDMARKS:
            fail(f"'{name}' must be at least {least} landmark indices in 0..{NUM_LANDMARKS - 1}")
    if not isinstance(meta.get("read_mirrored", False), bool):
        fail(f"meta['read_mirrored'] is {meta['read_mirrored']!r}; it must be true or false")
    widths = {"delta": 3 * len(subset), "shape": 3 * len(subset), "reference_shape": 3 * len(subset)}
    heads = {}
    names = HEADS + ((FAR_HEAD,) if FAR_HEAD in meta.get("heads", {}) else ())
    if FAR_HEAD in names:
        gate = meta.get("gate") if isinstance(meta.get("gate"), dict) else {}
        if not isinstance(gate.get("turned_degrees"), (int, float)) or not 0 < gate["turned_degrees"] < 180 \
                or not isinstance(gate.get("misfit"), (int, float)) or not gate["misfit"] > 0:
            fail(f"head '{FAR_HEAD}' needs meta['gate']: 'turned_degrees' in (0, 180) and a positive 'misfit'")
    for head in names:
        spec = meta.get("heads", {}).get(head)
        if not isinstance(spec, dict) or not spec.get("parts") or any(p not in PARTS for p in spec["parts"]):
            fail(f"head '{head}' names no parts or unknown ones (known: {PARTS})")
        if head == "alone" and any(p != "shape" for p in spec["parts"]):
            fail("the 'alone' head can only read the face's own shape")
        width = sum(widths[p] for p in spec["parts"])
        mean, scale = arrays.get(f"{head}_mean"), arrays.get(f"{head}_scale")
        if mean is None or scale is None or mean.shape != (width,) or scale.shape != (width,) or np.any(scale <= 0):
            fail(f"head '{head}' needs a mean and a positive scale of {width} values")
        layers, inputs, index = [], width, 0
        while f"{head}_w{index}" in arrays:
            weights, bias = arrays[f"{head}_w{index}"], arrays.get(f"{head}_b{index}")
            if weights.ndim != 2 or weights.shape[0] != inputs or bias is None or bias.shape != (weights.shape[1],):
                fail(f"head '{head}' layer {index} has weights {weights.shape} after {inputs} inputs")
            layers.append((weights.astype(np.float64), bias.astype(np.float64)))
            inputs, index = weights.shape[1], index + 1
        if not layers or inputs != len(classes):
            fail(f"head '{head}' must end in {len(classes)} outputs, one per class")
        if not all(np.all(np.isfinite(a)) for layer in layers for a in layer) or not np.all(np.isfinite(mean)):
            fail(f"head '{head}' holds NaN or infinite values")
        heads[head] = Head(tuple(spec["parts"]), mean.astype(np.float64), scale.astype(np.float64), tuple(layers))
    return meta, template, rigid.astype(np.int64), subset.astype(np.int64), heads


@lru_cache(maxsize=1)
def landmark_judge() -> LandmarkJudge:
    """The judge that ships with the pack (read once)."""
    return LandmarkJudge.from_file(data_path(JUDGE_FILE))


# ------------------------------------------------------------------------------------------ what was asked for
def asked_classes(label: str) -> tuple[str, ...]:
    """The judge's classes a target asks for, from its label: a class name itself, or a library preset's PixelSmile
    categories (one: "laughing" asks for happy; two, a blend: "happily surprised" accepts either). Empty where the
    target has no class (a wink, a viseme, an own edit): the judge then reads it without a verdict."""
    name = label.strip().lower()
    classes = landmark_judge().classes
    if name in classes:
        return (name,)
    entry = library().get(name)
    if entry is None:
        return ()
    found = tuple(PIXELSMILE_CLASS[c] for c in entry.pixelsmile if PIXELSMILE_CLASS.get(c) in classes)
    return found if len(found) == len(entry.pixelsmile) else ()


def expression_copied(top: str | None, probability: float | None, reference_class: str | None,
                      asked: list[str] | tuple[str, ...], taken_apart: bool = False) -> bool | None:
    """Does a face show the reference photo's expression instead of its target? The judge reads the photo's class
    on it (at least :data:`COPIED_PROBABILITY` sure) where the target asks for another. None: not judged (no
    reference class, the target asks for the photo's own class, or the face is ``taken_apart`` from the photo - the
    far head says what such a face shows, not whether it is unchanged from the photo: judged, it flagged 20 % of
    genuine expressions on real photos of one person taken elsewhere, docs/judge.md)."""
    if reference_class is None or top is None or not asked or reference_class in asked or taken_apart:
        return None
    return top == reference_class and (probability or 0.0) >= COPIED_PROBABILITY
