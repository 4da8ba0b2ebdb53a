"""How good is a generated expression set: same person as the reference, same person across the set,
and the expression that was asked for.

- identity: ArcFace cosine of each image's face to the reference identity (Arc2Face reports 0.796 on
  AgeDB for its own generations);
- consistency: mean and minimum cosine over all pairs of generated faces;
- expression error: mean absolute difference between the blendshapes re-estimated on the image and the
  target in the estimator's own space (a preset's calibrated estimator-space target, an estimated
  expression's own blendshapes), over the blendshapes the estimator can read (EmojiDiff's metric, restricted
  to what MediaPipe measures: the list is data, ``estimator_targets.json``; blendshapes it never moves would
  only add a floor no image can beat), and the Euclidean distance of FLAME-55 when both sides have it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import GenAffectInputError, NoFaceFoundError
from ..expression.batch import BLENDSHAPE_INDEX, ExpressionBatch
from ..expression.expression_estimator import ExpressionEstimator, estimate_expressions
from ..expression.expression_library import estimator_space
from ..face.face_analyzer import FaceAnalyzer
from ..face.face_choice import no_face_reason, too_small_reason
from ..face.identity import Identity, order_faces
from ..images import rgb_to_bgr

NODE = "GenAffect Face Metrics"


@dataclass
class ImageMetrics:
    index: int
    label: str
    face_found: bool
    identity_cosine: float | None = None
    blendshape_l1: float | None = None
    flame_l2: float | None = None
    # is the face nearer its own target than every other target of the set (blendshape L1)? None: not measured
    expression_nearest: bool | None = None
    held_out_cosine: float | None = None  # to the held-out photos of the person (not used for conditioning)
    copy_suspected: bool | None = None  # nearer a reference than any two real photos of the person are
    # shows the reference photo's own expression rather than its target (None: not judged)
    expression_copied: bool | None = None
    head_pose: list[float] | None = None  # measured yaw, pitch, roll (degrees)
    # |measured - wanted| yaw, pitch, roll in degrees; wanted = the reference photo's pose + the target's head turn
    pose_error: list[float] | None = None
    gaze_error: float | None = None  # |measured - target| horizontal and vertical gaze (eyeLook blendshapes), summed
    note: str = ""


@dataclass
class SetMetrics:
    images: list[ImageMetrics]
    faces_found: int
    identity_mean: float | None
    identity_min: float | None
    consistency_mean: float | None  # over all pairs of generated faces
    consistency_min: float | None
    blendshape_l1_mean: float | None
    flame_l2_mean: float | None
    expression_accuracy: float | None = None  # share of measured faces nearest their own target
    same_person_band: tuple[float, float] | None = None  # min, max cosine between the person's real photos
    held_out_mean: float | None = None
    copies: int | None = None  # faces suspected to be copied from a reference
    expression_copies: int | None = None  # faces that show the reference photo's expression, not their target
    pose_error_mean: list[float] | None = None  # mean |error| of yaw, pitch, roll over the measured faces (degrees)
    gaze_error_mean: float | None = None
    # (images, 52): each face's re-estimated blendshapes and its target as the estimator reads it, NaN where none
    # (for curves over frames; not in the JSON)
    measured: np.ndarray | None = field(default=None, repr=False, compare=False)
    expected: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> str:
        values = asdict(self)
        for name in ("measured", "expected"):
            values.pop(name)
        return json.dumps(values, indent=2)

    def summary(self) -> str:
        def number(value):
            return "n/a" if value is None else f"{value:.3f}"

        lines = [
            f"faces found: {self.faces_found}/{len(self.images)}",
            f"identity cosine to reference: mean {number(self.identity_mean)}, min {number(self.identity_min)}",
            f"set consistency (pairwise cosine): mean {number(self.consistency_mean)}, min {number(self.consistency_min)}",
        ]
        if self.blendshape_l1_mean is not None:
            lines.append(f"expression error (blendshape L1): mean {number(self.blendshape_l1_mean)}, over the "
                         f"{len(estimator_space().readable)} blendshapes the estimator reads, to the targets as it "
                         "reads them")
        if self.flame_l2_mean is not None:
            lines.append(f"expression error (FLAME-55 L2): mean {number(self.flame_l2_mean)}")
        if self.same_person_band is not None:
            low, high = self.same_person_band
            lines.append(f"the person's real photos agree with each other at cosine {low:.3f}..{high:.3f}; a generated "
                         f"face above {high:.3f} to a reference was likely copied from it (its pose and expression "
                         f"too): {self.copies} suspected")
        if self.held_out_mean is not None:
            lines.append(f"identity cosine to held-out photos of the person (not used to condition): mean "
                         f"{number(self.held_out_mean)}; far below the cosine to the reference also means copying")
        if self.expression_accuracy is not None:
            lines.append(f"expression accuracy (nearest to its own target of the set's targets): "
                         f"{self.expression_accuracy:.0%}")
        if self.expression_copies is not None:
            lines.append(f"expression copied from the reference photo (nearer its expression than the target): "
                         f"{self.expression_copies}")
        if self.pose_error_mean is not None:
            yaw, pitch, roll = self.pose_error_mean
            lines.append(f"head pose error (the reference photo's pose + each target's head turn): mean |yaw| "
                         f"{yaw:.1f}, |pitch| {pitch:.1f}, |roll| {roll:.1f} degrees")
        if self.gaze_error_mean is not None:
            lines.append(f"gaze error (eyeLook blendshapes, horizontal + vertical): mean {self.gaze_error_mean:.3f}")
        return "\n".join(lines)


def _pair_cosines(embeddings: np.ndarray, people: list[int] | None = None) -> np.ndarray | None:
    """Cosines of all pairs of L2-normalised embeddings (only pairs of one person, given ``people``); None
    without a pair."""
    first, second = np.triu_indices(len(embeddings), k=1)
    if people is not None:
        same = np.asarray(people)[first] == np.asarray(people)[second]
        first, second = first[same], second[same]
    if len(first) == 0:
        return None
    return np.einsum("nd,nd->n", embeddings[first], embeddings[second])


def pairwise_consistency(embeddings: np.ndarray, people: list[int] | None = None) -> tuple[float | None, float | None]:
    """Mean and minimum cosine over all pairs of L2-normalised embeddings; with ``people`` (each embedding's
    person), over the pairs of one person only. None without a pair."""
    pairs = _pair_cosines(embeddings, people)
    return (None, None) if pairs is None else (float(pairs.mean()), float(pairs.min()))


def same_person_band(reference_embeddings: np.ndarray) -> tuple[float, float] | None:
    """(min, max) cosine between the person's real reference photos; None with fewer than two."""
    pairs = _pair_cosines(reference_embeddings)
    return None if pairs is None else (float(pairs.min()), float(pairs.max()))


def blendshape_l1(estimated: np.ndarray, target: np.ndarray, readable: np.ndarray | None = None) -> np.ndarray:
    """Per row: mean |estimated - target| over the blendshapes the estimator reads (``readable_blendshapes``;
    never "_neutral", which is not a movement). ``readable`` (their indices) replaces the stored list, for the
    calibration that measures it; a target of one row applies to every row."""
    readable = estimator_space().readable_indices if readable is None else readable
    return np.abs(np.asarray(estimated)[:, readable] - np.asarray(target)[:, readable]).mean(axis=1)


def nearest_to_own_target(estimated: np.ndarray, targets: np.ndarray, own: list[int]) -> list[bool]:
    """Per estimated face: is it nearer (blendshape L1) to its own target row than to every other distinct
    target? Ties count as not nearer, so a face between two targets is not credited."""
    targets = np.asarray(targets)
    verdicts = []
    for face, row in zip(np.asarray(estimated), own):
        distances = blendshape_l1(np.repeat(face[None], len(targets), axis=0), targets)
        others = [d for j, d in enumerate(distances) if not np.array_equal(targets[j], targets[row])]
        verdicts.append(all(distances[row] < d for d in others))
    return verdicts


def flame_l2(estimated: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(estimated) - np.asarray(target), axis=1)


# Below this blendshape L1 a target is the reference photo's own expression (or nearly): no copy to tell apart.
# Real photos of one labelled expression scatter about 0.07-0.10 around its target (the calibration).
SAME_EXPRESSION_L1 = 0.03


def expression_copied(estimated: np.ndarray, targets: np.ndarray, reference: np.ndarray) -> list[bool | None]:
    """Per face: does it show the reference photo's expression rather than its own target - nearer (blendshape
    L1) the photo's expression (the mean of the reference rows) than its target? Not judged (None) where the
    target is itself within ``SAME_EXPRESSION_L1`` of the photo's expression."""
    photo = np.asarray(reference, dtype=np.float64).mean(axis=0, keepdims=True)
    estimated, targets = np.asarray(estimated), np.asarray(targets)
    to_photo = blendshape_l1(estimated, np.repeat(photo, len(estimated), axis=0))
    to_target = blendshape_l1(estimated, targets)
    apart = blendshape_l1(targets, np.repeat(photo, len(targets), axis=0))
    return [None if gap < SAME_EXPRESSION_L1 else bool(near_photo < near_target)
            for near_photo, near_target, gap in zip(to_photo, to_target, apart)]


def _target_rows(target: ExpressionBatch, count: int) -> list[int]:
    """One target per image: N targets for N images, or one for all."""
    if len(target) == count:
        return list(range(count))
    if len(target) == 1:
        return [0] * count
    raise GenAffectInputError(
        f"{count} images but {len(target)} target expressions; give one target per image, or a single one for all."
    )


def _check_same_recognizer(analyzer: FaceAnalyzer, identity: Identity) -> None:
    ours = os.path.basename(analyzer.files.get("recognition", ""))
    theirs = os.path.basename(identity.recognition_model or "")
    if ours and theirs and ours != theirs:
        raise GenAffectInputError(
            f"the reference identity was embedded with {theirs} but this face analyzer recognises with {ours}; "
            "cosines between different recognizers mean nothing. Use the same Face Analyzer Loader settings for both."
        )


def measure(
    analyzer: FaceAnalyzer,
    identity: Identity,
    images_rgb: list[np.ndarray],
    labels: list[str] | None = None,
    target: ExpressionBatch | None = None,
    estimator: ExpressionEstimator | None = None,
    on_progress=None,
    core_landmarks: dict | None = None,
    held_out: Identity | None = None,
    reference_expression: ExpressionBatch | None = None,
) -> SetMetrics:
    """Metrics for RGB uint8 images (the largest face of each). Faceless images are reported, not fatal.

    Copying (WithAnyone, ICLR 2026): real photos of one person are far from identical, so a generated face
    nearer to a reference photo than any two of the person's real photos are to each other was most likely
    copied from it. With two or more references their own pairwise cosines give that band (it adapts to the
    recognizer and the person); ``held_out`` photos of the person, not used for conditioning, give the
    similarity a new photo of them would have. ``reference_expression`` (estimated on the reference photo)
    lets each face be checked for the other copy: its target's expression replaced by the photo's own."""
    _check_same_recognizer(analyzer, identity)
    if held_out is not None:
        _check_same_recognizer(analyzer, held_out)
    count = len(images_rgb)
    labels = labels or [f"image {i}" for i in range(count)]
    if len(labels) != count:
        raise GenAffectInputError(f"{len(labels)} labels for {count} images; give one per image or none.")
    results = [ImageMetrics(i, labels[i], False) for i in range(count)]

    crops, kept = [], []
    for index, rgb in enumerate(images_rgb):
        reason = too_small_reason(rgb)
        if reason is None:
            bgr = rgb_to_bgr(rgb)
            faces = order_faces(analyzer.detect(bgr), "largest")
            reason = no_face_reason(len(faces), 0, "largest")
        if reason is None:
            crops.append(analyzer.align(bgr, faces[0].keypoints))
            kept.append(index)
        else:
            results[index].note = reason
        if on_progress is not None:
            on_progress(index + 1, count)
    embeddings = analyzer.embed(crops) if crops else np.zeros((0, 512), np.float32)
    wanted = identity.embeddings_for(count)  # each image's own person (several with per-face crops)
    cosines = np.einsum("nd,nd->n", embeddings, wanted[kept]) if crops else np.zeros(0)
    for index, cosine in zip(kept, cosines):
        results[index].face_found = True
        results[index].identity_cosine = float(cosine)
    # the copy band compares photos of one person; the references of several people are one photo each
    band = None if identity.several_people else same_person_band(np.stack([r.embedding for r in identity.references]))
    copies = None
    if band is not None and crops:
        nearest_reference = (embeddings @ np.stack([r.embedding for r in identity.references]).T).max(axis=1)
        for index, similarity in zip(kept, nearest_reference):
            results[index].copy_suspected = bool(similarity > band[1])
        copies = sum(results[index].copy_suspected for index in kept)
    if held_out is not None and crops:
        for index, cosine in zip(kept, embeddings @ held_out.embedding):
            results[index].held_out_cosine = float(cosine)

    measured = expected = None
    if target is not None:
        measured, expected = _measure_expression(results, images_rgb, target, estimator, core_landmarks,
                                                 reference_expression)
    elif reference_expression is not None:
        raise GenAffectInputError(f"{NODE}: a reference_expression is compared with each face's target; connect "
                                  "target_expression too.")
    judged = [r.expression_copied for r in results if r.expression_copied is not None]

    people = [identity.person_of_image[i % len(identity.person_of_image)] for i in kept] if identity.several_people \
        else [0] * len(kept)
    consistency_mean, consistency_min = pairwise_consistency(embeddings, people)
    return SetMetrics(
        images=results,
        faces_found=len(kept),
        identity_mean=float(cosines.mean()) if len(kept) else None,
        identity_min=float(cosines.min()) if len(kept) else None,
        consistency_mean=consistency_mean,
        consistency_min=consistency_min,
        blendshape_l1_mean=_mean([r.blendshape_l1 for r in results]),
        flame_l2_mean=_mean([r.flame_l2 for r in results]),
        expression_accuracy=_mean([float(r.expression_nearest) for r in results if r.expression_nearest is not None]),
        same_person_band=band,
        held_out_mean=_mean([r.held_out_cosine for r in results]),
        copies=copies,
        expression_copies=sum(judged) if judged else None,
        pose_error_mean=_mean_rows([r.pose_error for r in results]),
        gaze_error_mean=_mean([r.gaze_error for r in results]),
        measured=measured,
        expected=expected,
    )


def _measure_expression(results: list[ImageMetrics], images_rgb, target: ExpressionBatch,
                        estimator: ExpressionEstimator | None, core_landmarks: dict | None = None,
                        reference: ExpressionBatch | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each face's expression against its target, written into ``results``; returns every image's re-estimated
    blendshapes and its target in the estimator's space (NaN rows where no face was read)."""
    if estimator is None and core_landmarks is None:
        raise GenAffectInputError(
            f"{NODE} needs an expression estimator to compare with the target expression: connect GenAffect "
            "Expression Estimator Loader, or face_landmarks from ComfyUI's MediaPipe Face Landmarker."
        )
    rows = _target_rows(target, len(images_rgb))
    wanted = target.estimator_space(NODE)
    measured = np.full((len(images_rgb), wanted.shape[1]), np.nan, np.float32)
    expected = wanted[rows].astype(np.float32)
    try:
        estimation = estimate_expressions(estimator, images_rgb, on_no_face="skip", core_landmarks=core_landmarks)
    except NoFaceFoundError:
        for result in results:
            result.note = result.note or "no face for the expression estimator"
        return measured, expected
    found = estimation.expression
    measured[estimation.image_indices] = found.blendshapes
    l1 = blendshape_l1(found.blendshapes, wanted[[rows[i] for i in estimation.image_indices]])
    l2 = None
    if found.flame is not None and target.flame is not None:
        l2 = flame_l2(found.flame, target.flame[[rows[i] for i in estimation.image_indices]])
    own = [rows[i] for i in estimation.image_indices]
    nearest = nearest_to_own_target(found.blendshapes, wanted, own) if len(target) > 1 else [None] * len(own)
    copied = ([None] * len(own) if reference is None
              else expression_copied(found.blendshapes, wanted[own], reference.estimator_space(NODE)))
    pose_errors = pose_error(found.head_pose, target, own, reference)
    gaze_errors = np.abs(gaze(found.blendshapes) - gaze(wanted[own])).sum(axis=1)
    for row, index in enumerate(estimation.image_indices):
        if found.head_pose is not None:
            results[index].head_pose = [round(float(v), 2) for v in found.head_pose[row]]
        if pose_errors is not None:
            results[index].pose_error = [round(float(v), 2) for v in pose_errors[row]]
        results[index].gaze_error = float(gaze_errors[row])
        results[index].expression_copied = copied[row]
        results[index].expression_nearest = nearest[row]
        results[index].blendshape_l1 = float(l1[row])
        if l2 is not None:
            results[index].flame_l2 = float(l2[row])
    return measured, expected


def gaze(blendshapes: np.ndarray) -> np.ndarray:
    """(N, 52) -> (N, 2) horizontal (> 0: towards the subject's left) and vertical (> 0: up) gaze, each the mean
    of the two eyes' eyeLook blendshapes (0..1 each way)."""
    value = lambda name: np.asarray(blendshapes, np.float64)[:, BLENDSHAPE_INDEX[name]]  # noqa: E731
    horizontal = (value("eyeLookOutLeft") + value("eyeLookInRight") - value("eyeLookInLeft") - value("eyeLookOutRight"))
    vertical = value("eyeLookUpLeft") + value("eyeLookUpRight") - value("eyeLookDownLeft") - value("eyeLookDownRight")
    return np.stack([horizontal, vertical], axis=1) / 2.0


def pose_error(measured: np.ndarray | None, target: ExpressionBatch, own: list[int],
               reference: ExpressionBatch | None) -> np.ndarray | None:
    """|measured - wanted| yaw, pitch, roll (degrees) per measured face, wanted = the reference photo's head pose
    (the mean of its rows) plus the face's target head turn; None without a measured pose or a reference pose (a
    turn is relative to the photo it is applied to)."""
    if measured is None or reference is None or reference.head_pose is None:
        return None
    wanted = reference.head_pose.astype(np.float64).mean(axis=0) + target.filled("head_turn")[own]
    return np.abs(np.asarray(measured, np.float64) - wanted)


def _mean_rows(rows) -> list[float] | None:
    present = [row for row in rows if row is not None]
    return [float(v) for v in np.mean(present, axis=0)] if present else None


def _mean(values) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
