"""ComfyUI core's MediaPipe Face Landmarker (FACE_LANDMARKS) as the source of Estimate Expression's faces: the
same face gives the same GA_EXPRESSION as the mediapipe wheel's result, and bad payloads are explained."""

from __future__ import annotations

import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError
from genaffect.models.expression import face_landmarks
from genaffect.nodes.estimation_nodes import GenAffectEstimateExpression
from mediapipe_results import MarkerLandmarker, core_face, core_landmarks, make_face, make_result
from tiny_insightface import faces_image, to_image_tensor

ESTIMATE = GenAffectEstimateExpression


def test_a_core_face_converts_to_the_face_the_mediapipe_wheel_gives():
    scores = np.random.default_rng(3).random(52)
    face = make_face(0.4, 0.3, scores, yaw=12.0, pitch=-5.0, roll=3.0, centre_y=0.55)
    ours = face_landmarks.faces_from_result(make_result(face))[0]
    core = face_landmarks.faces_from_core([core_face(*face, width=320, height=240)], (240, 320))[0]
    assert np.array_equal(core["blendshapes"], ours["blendshapes"])  # placed by name, not by position
    assert np.abs(core["landmarks"] - ours["landmarks"]).max() < 1e-5
    assert np.abs(core["head_pose"] - ours["head_pose"]).max() < 1e-4
    assert core["presence"] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_estimate_expression_from_core_landmarks_equals_the_estimator_route(tiny_pack):
    frames = [faces_image(dict(cx=128, cy=128, half=40)), faces_image(dict(cx=104, cy=136, half=30),
                                                                      dict(cx=200, cy=56, half=16))]
    images = to_image_tensor(*frames)
    from genaffect.models.expression.expression_estimator import ExpressionEstimator

    estimator = ExpressionEstimator(MarkerLandmarker(yaw=8.0), "stand-in for face_landmarker.task")
    wheel, _, _ = ESTIMATE().estimate(images, "largest", 0, "skip", estimator=estimator)
    payload = core_landmarks(MarkerLandmarker(yaw=8.0), frames)
    core, preview, report = ESTIMATE().estimate(images, "largest", 0, "skip", face_landmarks=payload)
    assert core.labels == wheel.labels and np.array_equal(core.blendshapes, wheel.blendshapes)
    assert np.abs(core.head_pose - wheel.head_pose).max() < 1e-4
    assert np.abs(core.landmarks - wheel.landmarks).max() < 1e-5 and preview.shape[0] == 2 and "2 face(s)" in report


def test_bad_core_payloads_and_a_missing_face_source_are_explained():
    images = to_image_tensor(faces_image(dict(cx=128, cy=128, half=40)))
    with pytest.raises(GenAffectInputError, match="connect an expression estimator .* or face_landmarks"):
        ESTIMATE().estimate(images, "largest", 0, "skip")
    with pytest.raises(GenAffectInputError, match="face_landmarks \\(FACE_LANDMARKS\\) describes 2 frames for 1 images"):
        ESTIMATE().estimate(images, "largest", 0, "skip", face_landmarks={"frames": [[], []]})
    face = core_face(*make_face(0.5, 0.3), width=256, height=256)
    for broken, message in (({**face, "transformation_matrix": None}, "no transformation_matrix"),
                            ({**face, "blendshapes": {"smile": 1.0}}, "1 blendshapes")):
        with pytest.raises(GenAffectInputError, match=message):
            face_landmarks.faces_from_core([broken], (256, 256))
