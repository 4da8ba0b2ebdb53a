"""MediaPipe FaceLandmarker results (built by hand, with MediaPipe's own classes) -> expressions."""

import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError
from genaffect.models.expression.face_landmarks import (
    face_order,
    faces_from_result,
    head_pose_degrees,
    rotation_from_degrees,
)
from mediapipe_results import make_face, make_result, vision  # noqa: E402


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (30, 0, 0), (0, -20, 0), (0, 0, 15), (-35, 12, -8), (60, 40, 25)])
def test_head_pose_angles_are_recovered_from_known_rotations(yaw, pitch, roll):
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_from_degrees(yaw, pitch, roll)
    assert np.allclose(head_pose_degrees(matrix), [yaw, pitch, roll], atol=1e-4)


def test_face_is_converted_with_blendshapes_by_name_landmarks_and_pose():
    scores = np.random.default_rng(1).random(52)
    (face,) = faces_from_result(make_result(make_face(0.5, 0.4, scores, yaw=20, shuffled=True)))
    assert np.allclose(face["blendshapes"], scores)  # placed by name even when MediaPipe's order differs
    assert face["landmarks"].shape == (478, 3)
    assert np.allclose(face["head_pose"], [20, 0, 0], atol=1e-4)


def test_face_order_matches_the_identity_nodes():
    faces = faces_from_result(make_result(make_face(0.7, 0.2), make_face(0.3, 0.4)))
    assert face_order(faces, "largest") == [1, 0]
    assert face_order(faces, "left to right") == [1, 0]
    assert face_order(faces, "highest score") == [1, 0]  # no presence reported: largest first
    with_presence = faces_from_result(make_result(make_face(0.7, 0.2, presence=0.9), make_face(0.3, 0.4, presence=0.5)))
    assert face_order(with_presence, "highest score") == [0, 1]
    assert faces_from_result(make_result()) == []


def test_results_without_blendshapes_or_pose_say_which_option_is_missing():
    landmarks, categories, matrix = make_face(0.5, 0.3)
    no_blendshapes = vision.FaceLandmarkerResult(face_landmarks=[landmarks], face_blendshapes=[], facial_transformation_matrixes=[matrix])
    with pytest.raises(GenAffectInputError, match="output_face_blendshapes=True"):
        faces_from_result(no_blendshapes)
    no_pose = vision.FaceLandmarkerResult(face_landmarks=[landmarks], face_blendshapes=[categories], facial_transformation_matrixes=[])
    with pytest.raises(GenAffectInputError, match="output_facial_transformation_matrixes=True"):
        faces_from_result(no_pose)
    partial = make_result((landmarks, categories[:10], matrix))
    with pytest.raises(GenAffectInputError, match="returned 10 blendshapes"):
        faces_from_result(partial)
