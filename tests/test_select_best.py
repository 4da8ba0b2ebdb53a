"""Select Best keeps, per expression, the candidate that is the person and shows the asked-for expression."""

from __future__ import annotations

import json

import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError
from genaffect.models.evaluation.face_metrics import ImageMetrics, SetMetrics
from genaffect.models.evaluation.select_best import PassRule, choose, failures, is_person, passes
from genaffect.models.expression.batch import ExpressionBatch
from genaffect.models.expression.expression_estimator import ExpressionEstimator
from genaffect.models.face.identity import extract_identity
from genaffect.nodes.evaluation_nodes import GenAffectSelectBest
from mediapipe_results import MarkerLandmarker
from tiny_insightface import faces_image, to_image_tensor

CALM, WILD = np.full(52, 0.1, np.float32), np.full(52, 0.8, np.float32)
TARGETS = ExpressionBatch(["calm", "wild"], blendshapes=np.stack([CALM, WILD]))


def _identity(analyzer):
    return extract_identity(analyzer, [faces_image(dict(cx=128, cy=128, identity=0))])[0]


def test_the_person_with_the_right_expression_is_chosen_per_expression(analyzer):
    person = faces_image(dict(cx=136, cy=120, half=36, identity=0, photo=1))  # a new photo of the person
    stranger = faces_image(dict(cx=136, cy=120, half=36, identity=5))
    # round 1: calm <- a stranger, wild <- the person looking calm; round 2: both the person, right expressions
    images = [stranger, person, person, person]
    estimated = [CALM, CALM, CALM, WILD]  # what the landmarker reads, image by image
    estimator = ExpressionEstimator(MarkerLandmarker(scores=estimated), "face_landmarker.task")
    best, report, sheet = GenAffectSelectBest().select(to_image_tensor(*images), 2, analyzer, _identity(analyzer),
                                                       TARGETS, estimator=estimator)
    rows = json.loads(report)
    assert [(r["expression"], r["candidate"], r["chosen"]) for r in rows] == [
        ("calm", 1, False), ("wild", 1, False), ("calm", 2, True), ("wild", 2, True)]
    assert rows[1]["expression_nearest"] is False and rows[3]["expression_nearest"] is True
    assert best.shape[0] == 2 and sheet.shape[0] == 1 and sheet.shape[2] > 2 * 256  # 2 candidates side by side


def test_ties_go_to_the_earlier_round_and_wrong_batch_sizes_are_explained(analyzer):
    person = faces_image(dict(cx=136, cy=120, half=36, identity=0, photo=1))
    estimator = ExpressionEstimator(MarkerLandmarker(scores=[CALM, WILD]), "face_landmarker.task")
    _, report, _ = GenAffectSelectBest().select(to_image_tensor(*[person] * 4), 2, analyzer, _identity(analyzer),
                                                TARGETS, estimator=estimator)
    assert [r["candidate"] for r in json.loads(report) if r["chosen"]] == [1, 1]
    with pytest.raises(GenAffectInputError, match="3 images for 2 expressions x 2 candidates"):
        GenAffectSelectBest().select(to_image_tensor(*[person] * 3), 2, analyzer, _identity(analyzer), TARGETS,
                                     estimator=estimator)


def _metrics(*images: ImageMetrics) -> SetMetrics:
    return SetMetrics(list(images), sum(m.face_found for m in images), None, None, None, None, None, None)


def test_a_copy_of_the_photo_or_its_expression_or_another_expression_loses_to_a_worse_scoring_honest_face():
    copied = ImageMetrics(0, "a", True, identity_cosine=0.99, blendshape_l1=0.01, copy_suspected=True)
    honest = ImageMetrics(1, "a", True, identity_cosine=0.70, blendshape_l1=0.10, copy_suspected=False)
    assert [c.chosen for c in choose(_metrics(copied, honest), 1, 2)] == [False, True]
    wrong = ImageMetrics(0, "a", True, identity_cosine=0.95, blendshape_l1=0.05, expression_nearest=False)
    right = ImageMetrics(1, "a", True, identity_cosine=0.60, blendshape_l1=0.20, expression_nearest=True)
    assert [c.chosen for c in choose(_metrics(wrong, right), 1, 2)] == [False, True]
    as_photo = ImageMetrics(0, "a", True, identity_cosine=0.95, blendshape_l1=0.05, expression_copied=True)
    moved = ImageMetrics(1, "a", True, identity_cosine=0.60, blendshape_l1=0.20, expression_copied=False)
    assert [c.chosen for c in choose(_metrics(as_photo, moved), 1, 2)] == [False, True]
    no_face = ImageMetrics(0, "a", False)
    assert [c.chosen for c in choose(_metrics(no_face, right), 1, 2)] == [False, True]


def test_a_pose_tolerance_makes_a_candidate_off_by_more_degrees_lose_and_says_why():
    from genaffect.models.evaluation.select_best import PassRule, failures

    turned_wrong = ImageMetrics(0, "a", True, identity_cosine=0.95, blendshape_l1=0.05, pose_error=[14.0, 2.0, 1.0])
    on_pose = ImageMetrics(1, "a", True, identity_cosine=0.70, blendshape_l1=0.10, pose_error=[3.0, 4.5, 0.5])
    unmeasured = ImageMetrics(2, "a", True, identity_cosine=0.99, blendshape_l1=0.01)
    rule = PassRule(max_pose_error=5.0)
    assert failures(turned_wrong, rule) == ["head pose off by 14.0 degrees (yaw), above 5"]
    assert failures(on_pose, rule) == [] and failures(turned_wrong) == []  # no tolerance: no pose gate
    assert failures(unmeasured, rule) == ["head pose not measured (the estimator found no face, or no reference pose)"]
    assert [c.chosen for c in choose(_metrics(turned_wrong, on_pose, unmeasured), 1, 3, rule)] == [False, True, False]
    assert [c.chosen for c in choose(_metrics(turned_wrong, on_pose, unmeasured), 1, 3)] == [False, False, True]


def test_select_best_refuses_a_pose_tolerance_without_the_photos_measured_pose(analyzer):
    images = to_image_tensor(faces_image(dict(cx=128, cy=128)))
    with pytest.raises(GenAffectInputError, match="max_pose_error compares each candidate's head pose"):
        GenAffectSelectBest().select(images, 1, analyzer, _identity(analyzer), TARGETS.rows([0]), max_pose_error=5.0)


def _judged(index, identity, probability, top="happy", l1=0.1, **more) -> ImageMetrics:
    return ImageMetrics(index, "happy", True, identity_cosine=identity, blendshape_l1=l1, asked_classes=["happy"],
                        judge="landmark judge", judge_top=top, judge_top_probability=max(probability, 0.5),
                        judge_probability=probability, judge_correct=top == "happy", **more)


def test_a_stranger_never_wins_however_well_it_shows_the_expression_and_the_verdict_says_so():
    stranger = _judged(0, identity=0.12, probability=0.99, l1=0.01)
    person_off = _judged(1, identity=0.71, probability=0.10, top="sad", l1=0.30)
    choices = choose(_metrics(stranger, person_off), 1, 2)
    assert [c.chosen for c in choices] == [False, True]
    assert choices[1].verdict.startswith("identity: identity cosine 0.710") and "0.120" in choices[1].verdict
    assert failures(stranger)[0] == "not the person: identity cosine 0.120 below 0.30"
    assert failures(person_off) == ["landmark judge reads sad (0.500), not happy (0.100)"]
    strict = PassRule(min_identity=0.8)  # the guard's limit replaces the default as the person's threshold
    assert not is_person(person_off, strict) and is_person(person_off)


def test_among_the_persons_faces_the_judges_probability_decides_then_the_intensity_distance():
    sure = _judged(0, identity=0.60, probability=0.90, l1=0.20)
    unsure = _judged(1, identity=0.80, probability=0.60, l1=0.05)
    choices = choose(_metrics(sure, unsure), 1, 2)
    assert [c.chosen for c in choices] == [True, False]
    assert choices[0].verdict.startswith("judge probability: landmark judge p(happy) 0.900 vs")
    near = _judged(0, identity=0.60, probability=0.91, l1=0.20)  # probabilities this close are no evidence
    closer = _judged(1, identity=0.60, probability=0.90, l1=0.05)
    choices = choose(_metrics(near, closer), 1, 2)
    assert [c.chosen for c in choices] == [False, True]
    assert choices[1].verdict == "intensity distance: blendshape L1 0.050 vs blendshape L1 0.200 (candidate 1)"
    assert choose(_metrics(near), 1, 1)[0].verdict == "the only candidate"


def test_a_similar_looking_stranger_above_the_threshold_still_loses_to_the_person():
    """Strangers of one look-alike source reach cosine 0.5: among a pool the person's best face sets the bar."""
    person_off = _judged(0, identity=0.80, probability=0.20, top="sad")
    stranger = _judged(1, identity=0.50, probability=0.99)  # above 0.30, but 0.30 below the person's face
    choices = choose(_metrics(person_off, stranger), 1, 2)
    assert [c.chosen for c in choices] == [True, False]
    assert choices[0].verdict.startswith("identity: identity cosine 0.800 (the person from 0.55)")
    closer = _judged(1, identity=0.70, probability=0.99)  # within the margin: the person too, and reads right
    assert [c.chosen for c in choose(_metrics(person_off, closer), 1, 2)] == [False, True]


def test_a_stranger_never_wins_where_the_persons_only_face_is_a_copy():
    """Measured on JAFFE: a posed 'fearful' photo nearly the neutral reference is flagged a copy; with copies left
    out of the pool's best identity, a look-alike stranger at 0.32 that read fearful won. The copy is still the
    person: it is chosen, and its verdict says it fails."""
    copy = _judged(0, identity=0.90, probability=0.10, top="neutral", copy_suspected=True,
                   copy_reason="identity cosine 0.855")
    stranger = _judged(1, identity=0.32, probability=1.0)
    choices = choose(_metrics(copy, stranger), 1, 2)
    assert [c.chosen for c in choices] == [True, False]
    assert choices[0].verdict.startswith("identity: identity cosine 0.900 (the person from 0.55)")
    assert not passes(copy)


def test_with_an_expression_network_both_judges_averaged_decide_and_the_verdict_and_failures_say_so():
    from genaffect.models.evaluation.select_best import deciding_reading

    def both(metrics: ImageMetrics, top: str, probability: float) -> ImageMetrics:
        metrics.pixel_judge = "fer.onnx"
        metrics.both_top, metrics.both_top_probability = top, max(probability, 0.5)
        metrics.both_probability, metrics.both_correct = probability, top == "happy"
        return metrics

    # the landmark judge alone prefers the first face; averaged with the pixel judge, the second reads happy
    landmark_sure = both(_judged(0, identity=0.70, probability=0.90), top="sad", probability=0.30)
    both_sure = both(_judged(1, identity=0.70, probability=0.55), top="happy", probability=0.80)
    assert deciding_reading(landmark_sure).judge == "both judges (the landmark judge and fer.onnx, averaged)"
    assert deciding_reading(_judged(2, identity=0.7, probability=0.9)).judge == "landmark judge"  # no network
    choices = choose(_metrics(landmark_sure, both_sure), 1, 2)
    assert [c.chosen for c in choices] == [False, True]
    assert choices[1].verdict.startswith("passing: passes vs both judges (the landmark judge and fer.onnx, averaged) "
                                         "reads sad (0.500), not happy (0.300)")
    assert failures(landmark_sure) == ["both judges (the landmark judge and fer.onnx, averaged) reads sad (0.500), "
                                       "not happy (0.300)"]
