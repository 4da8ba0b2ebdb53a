"""How good is a generated expression set: same person as the reference, same person across the set, not a
copy of a reference photo, and the expression that was asked for.

- identity: ArcFace cosine of each image's face to the reference identity (Arc2Face reports 0.796 on
  AgeDB for its own generations);
- consistency: mean and minimum cosine over all pairs of generated faces;
- copies: a face so close to a reference photo - the same person *and* the same face shape, pose and expression,
  or an aligned crop that is nearly the photo's pixels, or their mirror image - that it was copied rather than
  generated (``copy_checks.py``, thresholds measured on real photos);
- the expression, read by judges: GenAffect's landmark classifier (``expression_judge.py``: the class
  probabilities of each face, judged relative to the person's reference photo when its expression is given) and,
  when one is loaded, a pixel network (``expression/expression_network.py``), an independent second opinion whose
  agreement is reported; a target named after a class (a preset) gives the probability of the asked-for class;
- expression error: mean absolute difference between the blendshapes re-estimated on the image and the
  target in the estimator's own space (a preset's calibrated estimator-space target, an estimated
  expression's own blendshapes), over the blendshapes the estimator can read (EmojiDiff's metric, restricted
  to what MediaPipe measures: the list is data, ``estimator_targets.json``; blendshapes it never moves would
  only add a floor no image can beat), and the Euclidean distance of FLAME-55 when both sides have it: how far
  the intensity is from the target.
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
from ..expression.expression_network import ExpressionNetwork
from ..face.face_analyzer import FaceAnalyzer
from ..face.face_choice import no_face_reason, too_small_reason
from ..face.identity import Identity, ordered_faces
from ..images import bgr_to_rgb, rgb_to_bgr
from . import copy_checks, expression_judge

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
    copy_suspected: bool | None = None  # copied from a reference photo (copy_checks.py); None: not judged
    # shows the reference photo's own expression rather than its target (None: not judged)
    expression_copied: bool | None = None
    head_pose: list[float] | None = None  # measured yaw, pitch, roll (degrees)
    # |measured - wanted| yaw, pitch, roll in degrees; wanted = the reference photo's pose + the target's head turn
    pose_error: list[float] | None = None
    gaze_error: float | None = None  # |measured - target| horizontal and vertical gaze (eyeLook blendshapes), summed
    note: str = ""
    detection: str = ""  # how the face was found when the first detection pass missed it (a close-up)
    nearest_reference_cosine: float | None = None  # the highest cosine to one reference photo
    copy_reason: str = ""  # the numbers that decided the copy check
    asked_classes: list[str] = field(default_factory=list)  # the judge's classes the target asks for
    judge: str = ""  # which judge read the expression (the landmark classifier, relative to the reference or not)
    judge_probabilities: dict[str, float] | None = None
    judge_top: str | None = None
    judge_top_probability: float | None = None
    judge_probability: float | None = None  # of the asked-for class (summed over a blend's classes)
    judge_correct: bool | None = None  # the judge's top class is one the target asks for
    pixel_judge: str = ""  # the expression network's file, when one is loaded
    pixel_probabilities: dict[str, float] | None = None
    pixel_top: str | None = None
    pixel_probability: float | None = None
    pixel_correct: bool | None = None
    judges_agree: bool | None = None  # the two judges' top classes are the same
    # the two judges' probabilities averaged over the classes both read (what Select Best and the guard decide by
    # when an expression network is connected: on real photos it read better than the landmark judge alone on three
    # sources of four, docs/judge.md)
    both_probabilities: dict[str, float] | None = None
    both_top: str | None = None
    both_top_probability: float | None = None
    both_probability: float | None = None
    both_correct: bool | None = None


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
    copies: int | None = None  # faces copied from a reference
    expression_copies: int | None = None  # faces that show the reference photo's expression, not their target
    judge_accuracy: float | None = None  # share of judged faces whose top class is the asked-for one
    pixel_accuracy: float | None = None
    both_accuracy: float | None = None  # the two judges averaged
    judges_agreement: float | None = None  # share of faces both judges read where their top classes agree
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
        retried = [m for m in self.images if m.detection]
        if retried:
            lines.append(f"faces found only on a detection retry (close-ups): {len(retried)} "
                         f"({', '.join(m.label for m in retried)})")
        judged = [m for m in self.images if m.judge_correct is not None]
        if judged:
            lines.append(f"expression accuracy ({judged[0].judge}): {self.judge_accuracy:.0%} of {len(judged)} "
                         "faces read as the asked-for expression; " + ", ".join(
                             f"{m.label}: {m.judge_top} ({m.judge_top_probability:.2f})" for m in judged[:12]))
        if self.pixel_accuracy is not None:
            lines.append(f"pixel judge ({self.images[0].pixel_judge}): {self.pixel_accuracy:.0%} read as asked")
        if self.both_accuracy is not None:
            lines.append(f"both judges averaged: {self.both_accuracy:.0%} read as asked")
        if self.judges_agreement is not None:
            lines.append(f"the two judges agree on {self.judges_agreement:.0%} of faces (where they disagree, "
                         "look at the face yourself)")
        if self.blendshape_l1_mean is not None:
            lines.append(f"expression error (blendshape L1): mean {number(self.blendshape_l1_mean)}, over the "
                         f"{len(estimator_space().readable)} blendshapes the estimator reads, to the targets as it "
                         "reads them")
        if self.flame_l2_mean is not None:
            lines.append(f"expression error (FLAME-55 L2): mean {number(self.flame_l2_mean)}")
        if self.same_person_band is not None:
            low, high = self.same_person_band
            lines.append(f"the person's reference photos agree with each other at cosine {low:.3f}..{high:.3f}")
        if self.copies is not None:
            lines.append(f"copied from a reference photo (the same face, pose and expression): {self.copies}")
        if self.held_out_mean is not None:
            lines.append(f"identity cosine to held-out photos of the person (not used to condition): mean "
                         f"{number(self.held_out_mean)}; far below the cosine to the reference also means copying")
        if self.expression_accuracy is not None:
            lines.append(f"expression accuracy (nearest to its own target of the set's targets): "
                         f"{self.expression_accuracy:.0%}")
        if self.expression_copies is not None:
            lines.append(f"expression copied from the reference photo (the judge reads the photo's expression, not "
                         f"the target's): {self.expression_copies}")
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
    expression_network: ExpressionNetwork | None = None,
) -> SetMetrics:
    """Metrics for RGB uint8 images (the largest face of each). Faceless images are reported, not fatal.

    Copying (WithAnyone, ICLR 2026): real photos of one person are far from identical, so a generated face that
    is the reference photo again - the same person, face shape, pose and expression, or nearly the same pixels -
    was copied from it (``copy_checks.py``; the landmarks of the reference photo come with
    ``reference_expression``, Estimate Expression on it). ``held_out`` photos of the person, not used for
    conditioning, give the similarity a new photo of them would have. ``reference_expression`` also lets the
    expression judge read each face relative to the person's own photo, and check the other copy: the photo's
    expression in place of the target's; its head pose is what each target's head turn is measured from.
    ``expression_network`` adds the pixel judge's reading of every face. An identity of several people (Crop
    Faces) compares each image with its own person."""
    _check_same_recognizer(analyzer, identity)
    if held_out is not None:
        _check_same_recognizer(analyzer, held_out)
    count = len(images_rgb)
    labels = labels or [f"image {i}" for i in range(count)]
    if len(labels) != count:
        raise GenAffectInputError(f"{len(labels)} labels for {count} images; give one per image or none.")
    if reference_expression is not None and target is None:
        raise GenAffectInputError(f"{NODE}: a reference_expression is compared with each face's target; connect "
                                  "target_expression too.")
    results = [ImageMetrics(i, labels[i], False) for i in range(count)]

    crops, kept, detections = [], [], {}
    for index, rgb in enumerate(images_rgb):
        reason = too_small_reason(rgb)
        if reason is None:
            bgr = rgb_to_bgr(rgb)
            faces, results[index].detection = ordered_faces(analyzer, bgr, "largest")
            reason = no_face_reason(len(faces), 0, "largest")
        if reason is None:
            crops.append(analyzer.align(bgr, faces[0].keypoints))
            kept.append(index)
            detections[index] = faces[0]
        else:
            results[index].note = reason
        if on_progress is not None:
            on_progress(index + 1, count)
    embeddings = analyzer.embed(crops) if crops else np.zeros((0, 512), np.float32)
    wanted = identity.embeddings_for(count)  # each image's own person (several with per-face crops)
    cosines = np.einsum("nd,nd->n", embeddings, wanted[kept]) if crops else np.zeros(0)
    references = np.stack([r.embedding for r in identity.references])
    for index, cosine, nearest in zip(kept, cosines, (embeddings @ references.T).max(axis=1) if crops else []):
        results[index].face_found = True
        results[index].identity_cosine = float(cosine)
        results[index].nearest_reference_cosine = float(nearest)
    if held_out is not None and crops:
        for index, cosine in zip(kept, embeddings @ held_out.embedding):
            results[index].held_out_cosine = float(cosine)

    shapes, measured, expected = {}, None, None
    if target is not None:
        measured, expected, shapes = _measure_expression(results, images_rgb, target, estimator, core_landmarks,
                                                         reference_expression)
    if expression_network is not None:
        _pixel_judge(results, images_rgb, detections, expression_network)
    for index, crop in zip(kept, crops):  # the aligned crops' pixels against each reference photo's, and mirrored
        pixels = max(copy_checks.pixel_similarity(bgr_to_rgb(crop), reference.crop_rgb)
                     for reference in identity.references)
        results[index].copy_suspected, results[index].copy_reason = copy_checks.copied(
            results[index].nearest_reference_cosine, shapes.get(index), pixels)
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
        # the band compares photos of one person; the references of several people are one photo each
        same_person_band=None if identity.several_people else same_person_band(references),
        held_out_mean=_mean([r.held_out_cosine for r in results]),
        copies=sum(bool(results[index].copy_suspected) for index in kept) if kept else None,
        expression_copies=sum(judged) if judged else None,
        judge_accuracy=_mean([float(r.judge_correct) for r in results if r.judge_correct is not None]),
        pixel_accuracy=_mean([float(r.pixel_correct) for r in results if r.pixel_correct is not None]),
        both_accuracy=_mean([float(r.both_correct) for r in results if r.both_correct is not None]),
        judges_agreement=_mean([float(r.judges_agree) for r in results if r.judges_agree is not None]),
        pose_error_mean=_mean_rows([r.pose_error for r in results]),
        gaze_error_mean=_mean([r.gaze_error for r in results]),
        measured=measured,
        expected=expected,
    )


def _measure_expression(results: list[ImageMetrics], images_rgb, target: ExpressionBatch,
                        estimator: ExpressionEstimator | None, core_landmarks: dict | None = None,
                        reference: ExpressionBatch | None = None) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
    """Blendshape and FLAME errors, head pose and gaze errors, the landmark judge's reading and the
    expression-copy check of every face the estimator finds, written into ``results``. Returns every image's
    re-estimated blendshapes and its target in the estimator's space (NaN rows where no face was read, for curves
    over frames) and each read image's face-shape distance to the nearest reference photo (for the copy check;
    empty without the reference photo's landmarks)."""
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
        return measured, expected, {}
    found = estimation.expression
    measured[estimation.image_indices] = found.blendshapes
    own = [rows[i] for i in estimation.image_indices]
    l1 = blendshape_l1(found.blendshapes, wanted[own])
    l2 = None
    if found.flame is not None and target.flame is not None:
        l2 = flame_l2(found.flame, target.flame[own])
    nearest = nearest_to_own_target(found.blendshapes, wanted, own) if len(target) > 1 else [None] * len(own)
    pose_errors = pose_error(found.head_pose, target, own, reference)
    gaze_errors = np.abs(gaze(found.blendshapes) - gaze(wanted[own])).sum(axis=1)
    for row, index in enumerate(estimation.image_indices):
        if found.head_pose is not None:
            results[index].head_pose = [round(float(v), 2) for v in found.head_pose[row]]
        if pose_errors is not None:
            results[index].pose_error = [round(float(v), 2) for v in pose_errors[row]]
        results[index].gaze_error = float(gaze_errors[row])
        results[index].expression_nearest = nearest[row]
        results[index].blendshape_l1 = float(l1[row])
        if l2 is not None:
            results[index].flame_l2 = float(l2[row])

    judge = expression_judge.landmark_judge()
    reading = judge.read(found, reference)
    reference_class = judge.reference_class(reference)
    for row, index in enumerate(estimation.image_indices):
        result = results[index]
        result.asked_classes = list(expression_judge.asked_classes(target.labels[own[row]]))
        result.judge = reading.judge
        result.judge_probabilities = reading.probabilities_of(row)
        result.judge_top, result.judge_top_probability = reading.top(row)
        if result.asked_classes:
            result.judge_probability = reading.probability(row, result.asked_classes)
            result.judge_correct = result.judge_top in result.asked_classes
            result.expression_copied = expression_judge.expression_copied(
                result.judge_top, result.judge_top_probability, reference_class, result.asked_classes,
                reading.taken_apart(row))
    return measured, expected, judge.shape_distances(found, reference, estimation.image_indices)


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


def _pixel_judge(results: list[ImageMetrics], images_rgb, detections: dict, network: ExpressionNetwork) -> None:
    """The expression network's reading of every face the face analyzer found, and its agreement with the
    landmark judge."""
    indices = sorted(detections)
    if not indices:
        return
    crops = [network.crop(images_rgb[i], detections[i].box, detections[i].keypoints) for i in indices]
    probabilities = network.probabilities(crops)
    for index, row in zip(indices, probabilities):
        result = results[index]
        result.pixel_judge = network.name
        result.pixel_probabilities = {name: float(p) for name, p in zip(network.classes, row)}
        result.pixel_top = network.classes[int(np.argmax(row))]
        if result.asked_classes and any(c in network.classes for c in result.asked_classes):
            result.pixel_probability = float(sum(result.pixel_probabilities.get(c, 0.0) for c in result.asked_classes))
            result.pixel_correct = result.pixel_top in result.asked_classes
        if result.judge_top is not None and result.judge_top in network.classes:
            result.judges_agree = result.pixel_top == result.judge_top
        combine_judges(result)


def combine_judges(result: ImageMetrics) -> None:
    """The landmark and pixel judges' probabilities, each renormalised over the classes both read, averaged."""
    if result.judge_probabilities is None or result.pixel_probabilities is None:
        return
    shared = [c for c in result.judge_probabilities if c in result.pixel_probabilities]
    landmark = np.array([result.judge_probabilities[c] for c in shared])
    pixel = np.array([result.pixel_probabilities[c] for c in shared])
    if not shared or landmark.sum() <= 0 or pixel.sum() <= 0:
        return
    both = (landmark / landmark.sum() + pixel / pixel.sum()) / 2
    result.both_probabilities = {c: round(float(p), 4) for c, p in zip(shared, both)}
    best = int(np.argmax(both))
    result.both_top, result.both_top_probability = shared[best], float(both[best])
    if any(c in shared for c in result.asked_classes):
        result.both_probability = float(sum(result.both_probabilities.get(c, 0.0) for c in result.asked_classes))
        result.both_correct = result.both_top in result.asked_classes


def _mean(values) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
