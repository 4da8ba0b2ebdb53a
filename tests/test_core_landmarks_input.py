"""ComfyUI core's FACE_LANDMARKS (its MediaPipe Face Landmarker node, no mediapipe wheel needed): anything malformed
is refused naming the face_landmarks input, the frame and the face, never a KeyError or IndexError from inside, and
never blamed on another input. Faces are built here in core's layout with NumPy alone, so this runs without the
mediapipe wheel too."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError
from genaffect.models.expression.batch import BLENDSHAPE_NAMES
from genaffect.models.expression.face_landmarks import faces_from_core
from genaffect.nodes.estimation_nodes import GenAffectEstimateExpression
from tiny_insightface import faces_image, to_image_tensor


def core_face(width=256, height=256) -> dict:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0.3, 0.7, (478, 2)) * [width, height]
    return {"bbox_xyxy": np.array([*xy.min(0), *xy.max(0)], np.float32),
            "blendshapes": {name: 0.1 for name in BLENDSHAPE_NAMES},
            "landmarks_xy": xy.astype(np.float32), "landmarks_3d": rng.normal(0, 5, (478, 3)).astype(np.float32),
            "presence": 2.0, "score": 0.9, "transformation_matrix": np.eye(4)}


def landmarks(frames=2) -> dict:
    return {"frames": [[core_face()] for _ in range(frames)], "image_size": (256, 256), "connection_sets": {}}


def with_face(key, value):
    def change(data):
        data["frames"][0][0][key] = value
        return data
    return change


def without(key):
    def change(data):
        del data["frames"][0][0][key]
        return data
    return change


def a_score(name, value):
    def change(data):
        data["frames"][0][0]["blendshapes"][name] = value
        return data
    return change


MALFORMED = {
    "a list": (lambda d: [d], "is a list without 'frames'"),
    "no frames": (lambda d: {"image_size": d["image_size"]}, "without 'frames'"),
    "frames a dict": (lambda d: {**d, "frames": {"0": d["frames"][0]}}, "its frames are a dict"),
    "a frame that is a face": (lambda d: {**d, "frames": [d["frames"][0][0], d["frames"][1]]}, "frame 0: is not a list"),
    "a face that is None": (lambda d: {**d, "frames": [[None], d["frames"][1]]}, "frame 0: is not a list of faces"),
    "one frame for two images": (lambda d: {**d, "frames": d["frames"][:1]}, "describes 1 frames for 2 images"),
    "no landmarks_xy": (without("landmarks_xy"), "frame 0 face 0: has no landmarks_xy"),
    "no presence": (without("presence"), "frame 0 face 0: its presence is None"),
    "10 landmarks": (with_face("landmarks_xy", np.zeros((10, 2))), r"landmarks_xy have shape \[10, 2\]"),
    "landmarks as text": (with_face("landmarks_xy", [["a", "b"]] * 478), "landmarks_xy are not numbers"),
    "NaN landmarks": (with_face("landmarks_xy", np.full((478, 2), np.nan)), "landmarks_xy hold NaN"),
    "landmarks all at one point": (with_face("landmarks_xy", np.zeros((478, 2))), "landmarks_xy lie on one line or point"),
    "2-column landmarks_3d": (with_face("landmarks_3d", np.zeros((478, 2))), r"landmarks_3d have shape \[478, 2\]"),
    "blendshapes a list": (with_face("blendshapes", [0.1] * 52), "0 blendshapes"),
    "a NaN score": (a_score("jawOpen", float("nan")), "blendshape jawOpen is nan, not a score in 0..1"),
    "a score as text": (a_score("jawOpen", "wide"), "blendshape jawOpen is 'wide'"),
    "a score of 7": (a_score("jawOpen", 7.0), "blendshape jawOpen is 7.0"),
    "presence as text": (with_face("presence", "high"), "its presence is 'high'"),
    "a 2x2 matrix": (with_face("transformation_matrix", np.eye(2)), r"transformation_matrix have shape \[2, 2\]"),
    "a zero matrix": (with_face("transformation_matrix", np.zeros((4, 4))), "has no rotation"),
    "a NaN matrix": (with_face("transformation_matrix", np.full((4, 4), np.nan)), "transformation_matrix hold NaN"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_face_landmarks_are_refused_naming_the_input_frame_and_face(name):
    change, message = MALFORMED[name]
    images = to_image_tensor(*[faces_image(dict(cx=128, cy=128, half=40))] * 2)
    with pytest.raises(GenAffectInputError, match=f"^face_landmarks.*{message}"):
        GenAffectEstimateExpression().estimate(images, "largest", 0, "skip", face_landmarks=change(landmarks()))


def test_well_formed_core_faces_convert_including_torch_tensors():
    import torch

    face = core_face()
    tensors = {**copy.deepcopy(face), "landmarks_xy": torch.from_numpy(face["landmarks_xy"]),
               "transformation_matrix": torch.eye(4)}
    (one,), (two,) = faces_from_core([face], (256, 256)), faces_from_core([tensors], (256, 256))
    assert np.allclose(one["landmarks"], two["landmarks"]) and np.allclose(one["head_pose"], 0)
    expression = GenAffectEstimateExpression().estimate(
        to_image_tensor(*[faces_image(dict(cx=128, cy=128, half=40))] * 2), "largest", 0, "skip",
        face_landmarks=landmarks())[0]
    assert len(expression) == 2 and np.allclose(expression.blendshapes[:, 1:], 0.1)
