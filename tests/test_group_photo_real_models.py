"""Find Faces with the real models on a real public group photo: insightface's own demo picture (t1.jpg, six
people around a table), read from the installed insightface package, never copied into the pack.

Runs where GENAFFECT_TEST_MODELS holds insightface/models/buffalo_sc_int8 (SCRFD + an INT8 ArcFace) and
mediapipe/face_landmarker.task (CONTRIBUTING.md, "Real models")."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

MODELS = os.environ.get("GENAFFECT_TEST_MODELS", "")
PACK = os.path.join(MODELS, "insightface", "models", "buffalo_sc_int8")
TASK = os.path.join(MODELS, "mediapipe", "face_landmarker.task")
insightface = pytest.importorskip("insightface")
GROUP = os.path.join(os.path.dirname(insightface.__file__), "data", "images", "t1.jpg")

pytestmark = pytest.mark.skipif(
    not (os.path.isdir(PACK) and os.path.isfile(TASK) and os.path.isfile(GROUP)),
    reason="set GENAFFECT_TEST_MODELS to a models folder with insightface/models/buffalo_sc_int8 and "
           "mediapipe/face_landmarker.task (and insightface's t1.jpg must be installed)")


@pytest.fixture(scope="module")
def analyzer():
    from genaffect.models.face.face_analyzer import load_face_analyzer
    from genaffect.models.files.onnx_providers import choose_providers

    return load_face_analyzer("buffalo_sc_int8", PACK, choose_providers("CPU"), det_size=640, det_threshold=0.5)


@pytest.fixture(scope="module")
def estimator():
    from genaffect.models.expression.expression_estimator import load_estimator

    loaded = load_estimator(TASK)
    yield loaded
    loaded.close()


def test_every_face_of_a_real_group_photo_is_found_read_and_the_person_asked_for_chosen(analyzer, estimator):
    from genaffect.models.face.identity import extract_identity
    from genaffect.models.images import rgb_uint8_to_image_batch
    from genaffect.nodes.multiface_nodes import GenAffectFindFaces

    group = np.asarray(Image.open(GROUP).convert("RGB"))
    node = GenAffectFindFaces()
    listing, expression, _, report = node.find(analyzer, rgb_uint8_to_image_batch([group]), "left to right", "all",
                                               "error", estimator=estimator)
    faces = listing.faces[0]
    assert len(faces) == 6, report  # six people, all facing the camera
    assert [face.box[0] for face in faces] == sorted(face.box[0] for face in faces)
    assert len(expression) == 6 and expression.head_pose is not None  # each face's expression and pose read
    # the man at the back right (face 4) looks far towards the image's left: the most turned head, yaw < 0
    yaw = expression.head_pose[:, 0]
    assert int(np.abs(yaw).argmax()) == 4 and yaw[4] < -30, yaw
    # another picture of the fourth person from the left: their face mirrored and scaled down
    x1, y1, x2, y2 = (int(v) for v in faces[3].box)
    margin = x2 - x1
    crop = np.ascontiguousarray(group[y1 - margin:y2 + margin, x1 - margin:x2 + margin][:, ::-1])
    crop = np.asarray(Image.fromarray(crop).resize((crop.shape[1] * 4 // 5, crop.shape[0] * 4 // 5)))
    identity = extract_identity(analyzer, [crop])[0]
    chosen, _, _, report = node.find(analyzer, rgb_uint8_to_image_batch([group]), "left to right", "all", "error",
                                     identity=identity)
    (face,) = chosen.chosen
    assert face.number == 3, report
    others = [float(other.embedding @ identity.embedding) for other in faces if other is not faces[3]]
    assert face.similarity > 0.8 and max(others) < 0.35, (face.similarity, others)
