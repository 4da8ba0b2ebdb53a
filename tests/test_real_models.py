"""The real MediaPipe face landmarker and SMIRK weights on a real photo.

Runs only where the downloaded files exist: set GENAFFECT_TEST_MODELS to a ComfyUI-style models folder
holding mediapipe/face_landmarker.task and (optionally) smirk/SMIRK_em1.pt. See CONTRIBUTING.md, "Real models".
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from genaffect.models.expression import expression_estimator
from genaffect.models.expression.batch import BLENDSHAPE_INDEX
from PIL import Image

MODELS = os.environ.get("GENAFFECT_TEST_MODELS", "")
TASK = os.path.join(MODELS, "mediapipe", "face_landmarker.task")
SMIRK = os.path.join(MODELS, "smirk", "SMIRK_em1.pt")

pytestmark = pytest.mark.skipif(
    not os.path.isfile(TASK),
    reason="set GENAFFECT_TEST_MODELS to a models folder with mediapipe/face_landmarker.task to run real-model tests",
)

# The astronaut's eye centres as insightface's detector finds them (tests/test_alignment_real_photo.py).
EYES = np.array([[203, 100], [246, 103]])
RIGHT_IRIS, LEFT_IRIS = 468, 473  # MediaPipe's iris centres (the subject's right eye first)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def estimator():
    smirk = SMIRK if os.path.isfile(SMIRK) else None
    loaded = expression_estimator.load_estimator(TASK, smirk)
    yield loaded
    loaded.close()


def test_smiling_astronaut_has_smile_blendshapes_and_eyes_where_insightface_puts_them(estimator, astronaut):
    batch = expression_estimator.estimate_expressions(estimator, [astronaut]).expression
    for side in ("mouthSmileLeft", "mouthSmileRight"):
        assert batch.blendshapes[0, BLENDSHAPE_INDEX[side]] > 0.5
    assert batch.blendshapes[0, BLENDSHAPE_INDEX["jawOpen"]] < 0.3
    irises = batch.landmarks[0, [RIGHT_IRIS, LEFT_IRIS], :2] * [astronaut.shape[1], astronaut.shape[0]]
    assert np.abs(irises - EYES).max() < 8


def test_roll_follows_a_counter_clockwise_rotation_of_the_photo(estimator, astronaut):
    turned = np.asarray(Image.fromarray(astronaut).rotate(15, center=(225, 120)))
    pose = expression_estimator.estimate_expressions(estimator, [astronaut, turned]).expression.head_pose
    assert abs((pose[1, 2] - pose[0, 2]) - 15) < 4
    assert abs(pose[0, 0]) < 10  # a frontal face: little yaw


@pytest.mark.skipif(not os.path.isfile(SMIRK), reason="no smirk/SMIRK_em1.pt in GENAFFECT_TEST_MODELS")
def test_smirk_gives_a_constrained_flame_vector(estimator, astronaut):
    flame = expression_estimator.estimate_expressions(estimator, [astronaut, astronaut]).expression.flame
    assert np.isfinite(flame).all() and np.array_equal(flame[0], flame[1])
    assert (flame[:, 50:52] >= 0).all() and (flame[:, 50:52] <= 1).all()
    assert 0 <= flame[0, 52] < 0.3  # jaw opening in radians: the astronaut's smile is nearly closed


def test_the_smiling_astronaut_is_nearest_the_happy_presets_estimator_target(estimator, astronaut):
    from genaffect.models.evaluation.face_metrics import blendshape_l1
    from genaffect.models.expression.expression_library import presets

    basic = ["neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted"]
    reading = expression_estimator.estimate_expressions(estimator, [astronaut]).expression.blendshapes
    targets = presets(basic)
    errors = blendshape_l1(np.repeat(reading, len(basic), axis=0), targets.estimator_blendshapes)
    assert basic[int(np.argmin(errors))] == "happy"
    recipe_error = blendshape_l1(reading, targets.blendshapes[1:2])[0]
    assert errors[1] < recipe_error  # the calibrated target is nearer a real smile than the FACS recipe


def test_the_warped_astronaut_read_back_by_the_real_landmarker_moves_toward_each_target(estimator, astronaut):
    """The round trip of docs/face-motion.md on the public test photo: warped to each of the 7 basic presets, the
    photo is read back nearer each target than the photo itself, and nearer its own target than the others."""
    from genaffect.models.expression import face_motion, photo_warp
    from genaffect.models.expression.expression_library import estimator_target, readable_blendshapes

    basic = ("neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted")
    columns = [BLENDSHAPE_INDEX[name] for name in readable_blendshapes()]
    own = expression_estimator.estimate_expressions(estimator, [astronaut]).expression
    motion = face_motion.face_motion()
    face = face_motion.pose_face(motion.mesh, own.landmarks[0], own.blendshapes[0], own.head_pose[0], 512, 512)
    targets = np.stack([estimator_target(name) for name in basic])
    warped = [photo_warp.warp_photo(motion, astronaut, face, target).image for target in targets]
    back = expression_estimator.estimate_expressions(estimator, warped).expression.blendshapes
    l1 = np.abs(back[:, None, columns] - targets[None, :, columns]).mean(axis=2)  # (read back, target)
    before = np.abs(own.blendshapes[0, columns] - targets[:, columns]).mean(axis=1)
    print("L1 to the target, photo -> warped:", dict(zip(basic, zip(before.round(3), l1.diagonal().round(3)))))
    assert np.all(l1.diagonal() < before)
    assert l1.diagonal().mean() < 0.6 * before.mean()
    assert (l1.argmin(axis=1) == np.arange(7)).sum() >= 5, l1.argmin(axis=1)


def test_the_shipped_face_mesh_is_the_one_in_mediapipes_task_file():
    import importlib.util

    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "fit_face_motion.py")
    spec = importlib.util.spec_from_file_location("fit_face_motion", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from genaffect.models.expression import face_motion

    mesh = module.canonical_mesh(TASK)
    shipped = face_motion.face_motion().mesh
    np.testing.assert_allclose(shipped.vertices, mesh["vertices"], atol=1e-6)
    assert np.array_equal(shipped.triangles, mesh["triangles"]) and len(mesh["triangles"]) == 898
    assert np.array_equal(shipped.basis_ids, mesh["procrustes_ids"])


def test_face_metrics_pose_error_of_the_warps_head_turns_is_a_few_degrees_and_their_signs_agree(estimator, astronaut):
    """Head Turns' signs, Warp Expression's and MediaPipe's agree: the astronaut warped by each turn and read back
    by the real landmarker is within a few degrees of her own pose plus the turn (a sign error would be 20-40)."""
    from genaffect.models.evaluation.face_metrics import pose_error
    from genaffect.models.expression import face_motion, photo_warp
    from genaffect.models.expression.expression_library import estimator_target
    from genaffect.nodes.expression_nodes import GenAffectHeadTurns

    (turns,) = GenAffectHeadTurns().turn("yaw 15, yaw -15, pitch 10, pitch -10, roll 10, roll -10")
    own = expression_estimator.estimate_expressions(estimator, [astronaut]).expression
    motion = face_motion.face_motion()
    face = face_motion.pose_face(motion.mesh, own.landmarks[0], own.blendshapes[0], own.head_pose[0], 512, 512)
    warped = [photo_warp.warp_photo(motion, astronaut, face, estimator_target("neutral"), 1.0, turn).image
              for turn in turns.head_turn]
    back = expression_estimator.estimate_expressions(estimator, warped).expression.head_pose
    errors = pose_error(back, turns, list(range(len(turns))), own)
    print("pose error (yaw, pitch, roll) per turn:", dict(zip(turns.labels, errors.round(1).tolist())))
    asked = np.abs(turns.head_turn) > 0
    assert errors[asked].max() < 4.0 and errors.mean() < 3.0
