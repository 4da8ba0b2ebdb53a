"""Face metrics: identity cosine and set consistency on the tiny insightface models, blendshape L1 and
FLAME L2 on hand-built MediaPipe results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from genaffect.models.errors import GenAffectInputError
from genaffect.models.evaluation import copy_checks, face_metrics
from genaffect.models.expression import smirk_encoder
from genaffect.models.expression.batch import BLENDSHAPE_INDEX, ExpressionBatch
from genaffect.models.expression.expression_estimator import ExpressionEstimator, estimate_expressions
from genaffect.models.expression.expression_library import presets, readable_blendshapes
from genaffect.models.face.identity import extract_identity
from judge_readings import golden, square_shape
from mediapipe_results import MarkerLandmarker, core_landmarks
from smirk_weights import published_layout_weights
from tiny_insightface import blank_image, faces_image


def _identity(analyzer, person=0):
    references = [faces_image(dict(cx=128, cy=128, identity=person)), faces_image(dict(cx=120, cy=136, half=48, identity=person))]
    return extract_identity(analyzer, references)[0]


def test_pairwise_consistency_is_mean_and_min_over_pairs():
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mean, minimum = face_metrics.pairwise_consistency(embeddings)
    assert mean == pytest.approx(1 / 3) and minimum == pytest.approx(0.0)
    assert face_metrics.pairwise_consistency(embeddings[:1]) == (None, None)


def test_blendshape_l1_is_over_the_blendshapes_the_estimator_reads():
    readable = readable_blendshapes()
    assert "_neutral" not in readable and "noseSneerLeft" not in readable  # measured: MediaPipe never moves it
    estimated = np.zeros((1, 52))
    target = np.zeros((1, 52))
    target[0, 0] = 1.0  # "_neutral": not a movement
    target[0, BLENDSHAPE_INDEX["noseSneerLeft"]] = 0.9  # unreadable: no image could match it, so not counted
    target[0, BLENDSHAPE_INDEX["browDownLeft"]] = 0.51
    assert face_metrics.blendshape_l1(estimated, target)[0] == pytest.approx(0.51 / len(readable))


def test_same_person_scores_high_and_an_intruder_lowers_the_set(analyzer):
    identity = _identity(analyzer, person=0)
    same = [faces_image(dict(cx=128, cy=128, identity=0)), faces_image(dict(cx=96, cy=104, half=56, identity=0))]
    metrics = face_metrics.measure(analyzer, identity, same)
    assert metrics.faces_found == 2 and metrics.identity_min > 0.9 and metrics.consistency_min > 0.9
    mixed = face_metrics.measure(analyzer, identity, same + [faces_image(dict(cx=128, cy=128, identity=7))])
    intruder = mixed.images[2]
    assert intruder.face_found and intruder.identity_cosine < metrics.identity_min - 0.2
    assert mixed.consistency_min < metrics.consistency_min - 0.2


def test_faceless_image_is_reported_and_left_out_of_the_averages(analyzer):
    identity = _identity(analyzer)
    metrics = face_metrics.measure(analyzer, identity, [faces_image(dict(cx=128, cy=128)), blank_image()], ["a", "b"])
    assert metrics.faces_found == 1 and metrics.consistency_mean is None
    assert not metrics.images[1].face_found and metrics.images[1].note == "no face detected"
    data = json.loads(metrics.to_json())
    assert data["images"][1]["identity_cosine"] is None and data["identity_mean"] == pytest.approx(metrics.images[0].identity_cosine)
    no_faces = face_metrics.measure(analyzer, identity, [blank_image()])
    assert no_faces.faces_found == 0 and no_faces.identity_mean is None


def test_expression_error_compares_reestimated_blendshapes_with_each_target(analyzer):
    identity = _identity(analyzer)
    estimated = [np.full(52, 0.2, np.float32), np.full(52, 0.6, np.float32)]
    estimator = ExpressionEstimator(MarkerLandmarker(scores=estimated), "face_landmarker.task")
    target = ExpressionBatch(["calm", "wild"], blendshapes=np.stack([np.full(52, 0.2), np.full(52, 0.9)]).astype(np.float32))
    images = [faces_image(dict(cx=128, cy=128)), faces_image(dict(cx=128, cy=128))]
    metrics = face_metrics.measure(analyzer, identity, images, target=target, estimator=estimator)
    assert [m.blendshape_l1 for m in metrics.images] == pytest.approx([0.0, 0.3], abs=1e-6)
    assert metrics.blendshape_l1_mean == pytest.approx(0.15, abs=1e-6)
    assert metrics.flame_l2_mean is None  # no SMIRK, no target FLAME: absent, not zero
    # the same faces from ComfyUI core's MediaPipe Face Landmarker give the same error, with no estimator
    payload = core_landmarks(MarkerLandmarker(scores=estimated), images)
    from_core = face_metrics.measure(analyzer, identity, images, target=target, core_landmarks=payload)
    assert [m.blendshape_l1 for m in from_core.images] == pytest.approx([0.0, 0.3], abs=1e-6)


def test_flame_l2_when_smirk_and_the_target_both_have_it(analyzer, tmp_path):
    torch.save(published_layout_weights(0), tmp_path / "SMIRK_em1.pt")
    smirk = smirk_encoder.load_expression_encoder(str(tmp_path / "SMIRK_em1.pt"))
    estimator = ExpressionEstimator(MarkerLandmarker(), "face_landmarker.task", smirk, "SMIRK_em1.pt")
    target = ExpressionBatch(["x"], blendshapes=np.zeros((1, 52), np.float32), flame=np.zeros((1, 55), np.float32))
    image = faces_image(dict(cx=128, cy=128, half=48))
    metrics = face_metrics.measure(analyzer, _identity(analyzer), [image], target=target, estimator=estimator)
    from genaffect.models.expression.expression_estimator import estimate_expressions

    own_flame = estimate_expressions(estimator, [image]).expression.flame[0]
    assert metrics.images[0].flame_l2 == pytest.approx(float(np.linalg.norm(own_flame)), rel=1e-5)


def test_one_target_applies_to_every_image_and_other_counts_are_refused(analyzer):
    identity = _identity(analyzer)
    estimator = ExpressionEstimator(MarkerLandmarker(scores=[np.zeros(52, np.float32)]), "face_landmarker.task")
    images = [faces_image(dict(cx=128, cy=128))] * 3
    one = ExpressionBatch(["smile"], blendshapes=np.full((1, 52), 0.1, np.float32))
    assert face_metrics.measure(analyzer, identity, images, target=one, estimator=estimator).blendshape_l1_mean == pytest.approx(0.1)
    two = ExpressionBatch(["a", "b"], blendshapes=np.zeros((2, 52), np.float32))
    with pytest.raises(GenAffectInputError, match="3 images but 2 target expressions"):
        face_metrics.measure(analyzer, identity, images, target=two, estimator=estimator)


def test_target_needs_an_estimator_and_blendshapes(analyzer):
    identity = _identity(analyzer)
    images = [faces_image(dict(cx=128, cy=128))]
    target = ExpressionBatch(["a"], blendshapes=np.zeros((1, 52), np.float32))
    with pytest.raises(GenAffectInputError, match="connect GenAffect Expression Estimator Loader"):
        face_metrics.measure(analyzer, identity, images, target=target)
    flame_only = ExpressionBatch(["a"], flame=np.zeros((1, 55), np.float32))
    estimator = ExpressionEstimator(MarkerLandmarker(), "face_landmarker.task")
    with pytest.raises(GenAffectInputError, match="Face Metrics needs blendshapes"):
        face_metrics.measure(analyzer, identity, images, target=flame_only, estimator=estimator)


def test_identity_from_another_recognizer_is_refused(analyzer):
    identity = _identity(analyzer)
    identity.recognition_model = "/models/arc2face/arcface.onnx"
    with pytest.raises(GenAffectInputError, match="cosines between different recognizers mean nothing"):
        face_metrics.measure(analyzer, identity, [faces_image(dict(cx=128, cy=128))])


def test_expression_accuracy_counts_faces_nearest_their_own_target_of_the_set(analyzer):
    identity = _identity(analyzer)
    targets = np.stack([np.full(52, 0.1), np.full(52, 0.5), np.full(52, 0.9)]).astype(np.float32)
    # faces estimated at 0.15 (nearest its own 0.1), 0.8 (nearer 0.9 than its own 0.5) and 0.85 (own 0.9)
    estimated = [np.full(52, v, np.float32) for v in (0.15, 0.8, 0.85)]
    estimator = ExpressionEstimator(MarkerLandmarker(scores=estimated), "face_landmarker.task")
    target = ExpressionBatch(["a", "b", "c"], blendshapes=targets)
    images = [faces_image(dict(cx=128, cy=128))] * 3
    metrics = face_metrics.measure(analyzer, identity, images, target=target, estimator=estimator)
    assert [m.expression_nearest for m in metrics.images] == [True, False, True]
    assert metrics.expression_accuracy == pytest.approx(2 / 3)
    assert "expression accuracy (nearest to its own target of the set's targets): 67%" in metrics.summary()
    halves = np.stack([np.zeros(52), np.full(52, 0.5)])
    assert face_metrics.nearest_to_own_target(np.full((1, 52), 0.25), halves, [0]) == [False]  # a tie is no hit


def _person_photos():
    """Golden readings of one person (a source the judge never trained on): their neutral photo and the photos the
    judge reads right relative to it."""
    readings = golden()
    row = int(np.flatnonzero(readings["reference"] >= 0)[0])
    person, neutral = readings["person"][row], int(readings["reference"][row])
    right = {str(readings["labels"][i]): int(i) for i in np.flatnonzero(readings["person"] == person)
             if i != neutral and readings["classes"][int(np.argmax(readings["relative"][i]))] == readings["labels"][i]}
    return readings, neutral, right


def test_the_judge_reads_each_face_relative_to_the_photo_and_flags_one_that_kept_the_photos_expression(analyzer):
    readings, neutral, right = _person_photos()
    shown = sorted(right)[:2]  # two expressions the judge reads right on this person
    identity = _identity(analyzer)
    image = faces_image(dict(cx=128, cy=128, photo=1))
    photo = estimate_expressions(ExpressionEstimator(MarkerLandmarker(shapes=[square_shape(readings, neutral)]),
                                                     "face_landmarker.task"), [image]).expression
    # face 1 shows its target, face 2 kept the photo's neutral face although asked for the second expression,
    # face 3 is asked for the photo's own expression (neutral): nothing to tell apart, not judged
    shapes = [square_shape(readings, right[shown[0]]), square_shape(readings, neutral), square_shape(readings, neutral)]
    estimator = ExpressionEstimator(MarkerLandmarker(shapes=shapes), "face_landmarker.task")
    target = presets([shown[0], shown[1], "neutral"])
    metrics = face_metrics.measure(analyzer, identity, [image] * 3, target=target, estimator=estimator,
                                   reference_expression=photo)
    first, kept, calm = metrics.images
    assert first.judge == "landmark judge, relative to the reference photo" and first.judge_top == shown[0]
    assert first.judge_correct and first.judge_probability == pytest.approx(first.judge_probabilities[shown[0]], abs=1e-3)
    assert np.argmax(readings["relative"][right[shown[0]]]) == readings["classes"].tolist().index(first.judge_top)
    assert kept.judge_top == "neutral" and kept.judge_correct is False and kept.expression_copied is True
    assert first.expression_copied is False and calm.expression_copied is None and calm.judge_correct is True
    assert metrics.expression_copies == 1 and metrics.judge_accuracy == pytest.approx(2 / 3)
    assert "expression copied from the reference photo" in metrics.summary()
    alone = face_metrics.measure(analyzer, identity, [image] * 3, target=target, estimator=ExpressionEstimator(
        MarkerLandmarker(shapes=shapes), "face_landmarker.task"))
    assert alone.expression_copies is None and alone.images[0].judge.startswith("landmark judge, face alone")
    with pytest.raises(GenAffectInputError, match="connect target_expression too"):
        face_metrics.measure(analyzer, identity, [image], reference_expression=photo)


def test_a_face_turned_from_the_photo_is_read_by_the_far_head_and_not_judged_expression_copied(analyzer):
    from genaffect.models.evaluation.expression_judge import landmark_judge

    readings, neutral, right = _person_photos()
    identity = _identity(analyzer)
    image = faces_image(dict(cx=128, cy=128, photo=1))
    photo_shape = square_shape(readings, neutral)
    photo = estimate_expressions(ExpressionEstimator(MarkerLandmarker(shapes=[photo_shape]), "face_landmarker.task"),
                                 [image]).expression
    a = np.radians(landmark_judge().gate + 5)  # the photo's own face, its head turned past the gate
    yaw = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    centre = photo_shape.mean(axis=0)
    turned = ((photo_shape - centre) @ yaw.T + centre).astype(np.float32)
    shapes = [photo_shape, turned]  # both kept the photo's neutral face, asked for another expression
    estimator = ExpressionEstimator(MarkerLandmarker(shapes=shapes), "face_landmarker.task")
    metrics = face_metrics.measure(analyzer, identity, [image] * 2, target=presets([sorted(right)[0]] * 2),
                                   estimator=estimator, reference_expression=photo)
    near, far = metrics.images
    assert near.expression_copied is True and far.expression_copied is None
    assert "1 of 2 faces turned more than" in far.judge and "'expression copied' is not judged" in far.judge
    assert metrics.expression_copies == 1  # of the one face judged


def test_one_target_for_all_images_has_no_accuracy_to_report(analyzer):
    identity = _identity(analyzer)
    estimator = ExpressionEstimator(MarkerLandmarker(scores=[np.full(52, 0.2, np.float32)]), "face_landmarker.task")
    target = ExpressionBatch(["a"], blendshapes=np.full((1, 52), 0.2, np.float32))
    metrics = face_metrics.measure(analyzer, identity, [faces_image(dict(cx=128, cy=128))] * 2, target=target,
                                   estimator=estimator)
    assert metrics.expression_accuracy is None and "accuracy" not in metrics.summary()


def test_a_copy_of_a_reference_photo_is_flagged_by_closeness_and_a_new_photo_of_the_person_is_not(analyzer):
    references = [faces_image(dict(cx=128, cy=128, identity=0)), faces_image(dict(cx=120, cy=136, half=48, identity=0))]
    identity = extract_identity(analyzer, references)[0]
    held_out = extract_identity(analyzer, [faces_image(dict(cx=136, cy=120, half=36, identity=0, photo=3))])[0]
    # a pixel copy of reference 1, a new photo of the person, another person
    generated = [references[0], faces_image(dict(cx=128, cy=128, identity=0, photo=1)),
                 faces_image(dict(cx=128, cy=128, identity=5))]
    metrics = face_metrics.measure(analyzer, identity, generated, held_out=held_out)
    assert [m.copy_suspected for m in metrics.images] == [True, False, False] and metrics.copies == 1
    assert metrics.images[0].nearest_reference_cosine > copy_checks.COPY_COSINE_ALONE
    assert "no reference landmarks" in metrics.images[0].copy_reason
    assert all(m.held_out_cosine is not None for m in metrics.images) and metrics.held_out_mean is not None
    assert "copied from a reference photo (the same face, pose and expression): 1" in metrics.summary()
    # with the reference photo's landmarks a copy is the same person with the same face shape
    readings, neutral, right = _person_photos()
    other = sorted(right)[0]
    photo = estimate_expressions(ExpressionEstimator(MarkerLandmarker(shapes=[square_shape(readings, neutral)]),
                                                     "f.task"), [references[0]]).expression
    shapes = [square_shape(readings, neutral), square_shape(readings, right[other]), square_shape(readings, neutral)]
    estimator = ExpressionEstimator(MarkerLandmarker(shapes=shapes), "face_landmarker.task")
    metrics = face_metrics.measure(analyzer, identity, generated, target=presets([other] * 3), estimator=estimator,
                                   reference_expression=photo)
    copy, new, stranger = metrics.images
    assert copy.copy_suspected is True and "face shape distance 0.0000" in copy.copy_reason
    assert new.copy_suspected is False and stranger.copy_suspected is False  # another expression; another person


def test_a_mirrored_or_cropped_copy_of_a_reference_photo_is_flagged_by_its_aligned_pixels(analyzer):
    """The copy check compares each face's aligned crop with the reference photos' (Extract Identity keeps them):
    a mirrored or cropped photo is its photo's pixels again, a new photo of the person is not."""
    photo = faces_image(dict(cx=128, cy=128, identity=0))
    identity = extract_identity(analyzer, [photo, faces_image(dict(cx=120, cy=136, half=48, identity=0))])[0]
    generated = [np.ascontiguousarray(photo[:, ::-1]), np.ascontiguousarray(photo[16:, 16:]),
                 faces_image(dict(cx=128, cy=128, identity=0, photo=1))]
    mirrored, cropped, new = face_metrics.measure(analyzer, identity, generated).images
    for copy in (mirrored, cropped):
        pixels = float(copy.copy_reason.split("pixel similarity ")[1].split(" ")[0])
        assert copy.copy_suspected is True and pixels >= copy_checks.COPY_PIXELS, copy.copy_reason
    assert new.copy_suspected is False and "pixel similarity" in new.copy_reason


def test_head_pose_error_is_against_the_reference_photos_pose_plus_each_targets_turn_in_degrees(analyzer):
    from genaffect.nodes.expression_nodes import GenAffectHeadTurns

    identity = _identity(analyzer)
    photo = ExpressionBatch(["reference photo"], blendshapes=np.zeros((1, 52), np.float32),
                            head_pose=np.array([[5.0, 2.0, -1.0]], np.float32))
    (target,) = GenAffectHeadTurns().turn("straight, yaw 20")
    looking = np.zeros(52, np.float32)
    looking[[BLENDSHAPE_INDEX["eyeLookOutLeft"], BLENDSHAPE_INDEX["eyeLookInRight"]]] = 0.4  # gaze to their left
    estimator = ExpressionEstimator(MarkerLandmarker(scores=[looking], yaw=25.0), "face_landmarker.task")
    images = [faces_image(dict(cx=128, cy=128))] * 2
    metrics = face_metrics.measure(analyzer, identity, images, target=target, estimator=estimator,
                                   reference_expression=photo)
    measured = np.array([m.head_pose for m in metrics.images])
    np.testing.assert_allclose(measured[:, 0], 25.0, atol=0.01)
    # wanted yaw: 5 (the photo) + 0, then 5 + 20; pitch and roll as the photo's
    errors = np.array([m.pose_error for m in metrics.images])
    np.testing.assert_allclose(errors[:, 0], [20.0, 0.0], atol=0.01)
    np.testing.assert_allclose(errors[:, 1:], np.abs(measured[:, 1:] - [2.0, -1.0]), atol=0.01)
    np.testing.assert_allclose(metrics.pose_error_mean, errors.mean(axis=0), atol=1e-6)
    assert "head pose error" in metrics.summary() and "|yaw| 10.0" in metrics.summary()
    # the faces look 0.4 to their left in both eyes; the targets' gaze is the neutral face's as the estimator reads it
    assert face_metrics.gaze(looking[None]).tolist() == [[pytest.approx(0.4), 0.0]]
    wanted = np.abs(face_metrics.gaze(looking[None]) - face_metrics.gaze(target.estimator_space("test"))).sum(axis=1)
    assert [m.gaze_error for m in metrics.images] == pytest.approx(wanted.tolist())
    without = face_metrics.measure(analyzer, identity, images, target=target, estimator=ExpressionEstimator(
        MarkerLandmarker(scores=[looking], yaw=25.0), "face_landmarker.task"))
    assert without.pose_error_mean is None and "head pose error" not in without.summary()  # a turn needs the photo's pose
