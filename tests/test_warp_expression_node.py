"""GenAffect Warp Expression: photo(s) x expressions -> images and masks, from ComfyUI core's FACE_LANDMARKS (no
mediapipe package needed) or the pack's estimator; the Editor's head sliders and gaze reach the warp; progress moves
per warp and Cancel stops it; bad requests are refused with the reason.

The photo is skimage's astronaut with its face as MediaPipe's real landmarker reads it (tests/data/astronaut_face.json)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from genaffect.models.errors import GenAffectInputError, NoFaceFoundError
from genaffect.models.expression import face_motion, photo_warp
from genaffect.models.expression.batch import BLENDSHAPE_NAMES
from genaffect.models.expression.expression_library import estimator_target
from genaffect.nodes import comfy_host
from genaffect.nodes.expression_nodes import GenAffectExpressionEditor, GenAffectExpressionPreset
from genaffect.nodes.warp_nodes import GenAffectWarpExpression

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = dict(intensity=1.0, yaw=0.0, pitch=0.0, roll=0.0, gaze_horizontal=0.0, gaze_vertical=0.0,
                face_order="largest", face_index=0, on_no_face="skip")


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    with open(os.path.join(REPO, "tests", "data", "astronaut_face.json"), encoding="utf-8") as handle:
        return data.astronaut(), json.load(handle)


def core_payload(read: dict, frames: int = 1, empty: tuple[int, ...] = ()) -> dict:
    """FACE_LANDMARKS as ComfyUI core's MediaPipe Face Landmarker gives the astronaut's face (landmarks_3d's depth
    in its 192-pixel crop's units, chosen so GenAffect's conversion gives back MediaPipe's z)."""
    height, width = read["size"]
    points = np.array(read["landmarks"]).reshape(-1, 3)
    xy = points[:, :2] * [width, height]
    depth = points[:, 2] * width / float(np.ptp(xy[:, 0])) * 192
    face = {"bbox_xyxy": np.array([*xy.min(0), *xy.max(0)]), "presence": 3.0, "score": 0.9,
            "blendshapes": dict(zip(BLENDSHAPE_NAMES, read["blendshapes"])),
            "landmarks_xy": xy.astype(np.float32), "landmarks_3d": np.c_[xy, depth].astype(np.float32),
            "transformation_matrix": np.array(read["matrix"]).reshape(4, 4)}
    return {"frames": [[] if i in empty else [face] for i in range(frames)], "image_size": (height, width),
            "connection_sets": {}}


def as_image(*frames) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)


def test_each_photo_in_each_expression_with_masks_and_the_photo_untouched_outside_them(astronaut):
    rgb, read = astronaut
    presets = GenAffectExpressionPreset().build("happy, surprised, sad", 1.0)[0]
    images, masks, report = GenAffectWarpExpression().warp(as_image(rgb, rgb[:, ::-1]), presets,
                                                           face_landmarks=core_payload(read, 2, empty=(1,)), **DEFAULTS)
    assert images.shape == (3, 512, 512, 3) and masks.shape == (3, 512, 512) and masks.dtype == torch.float32
    pixels = (images.numpy() * 255).round().astype(np.uint8)
    for k in range(3):
        outside = masks[k].numpy() == 0
        assert np.array_equal(pixels[k][outside], rgb[outside])  # bit for bit
        assert 2000 < masks[k].sum() < 0.3 * 512 * 512  # the face, not the picture
        changed = np.abs(pixels[k].astype(int) - rgb).max(axis=2) > 8
        assert changed.sum() > 200 and not changed[~(masks[k].numpy() > 0)].any()
    assert not np.array_equal(pixels[0], pixels[1])
    assert "photo 1 skipped: no face detected" in report and "surprised" in report
    assert "note: the photo's own expression is strong (smile 0.90)" in report  # the astronaut smiles broadly


def test_the_same_warp_as_the_engine_from_core_landmarks_and_from_the_estimator(astronaut):
    rgb, read = astronaut
    happy = GenAffectExpressionPreset().build("happy", 1.0)[0]
    from_core = GenAffectWarpExpression().warp(as_image(rgb), happy, face_landmarks=core_payload(read), **DEFAULTS)

    class Landmarker:  # the real landmarker's reading of this photo, through the wheel's route
        def detect(self, image):
            from mediapipe.tasks.python import vision
            from mediapipe.tasks.python.components.containers.category import Category
            from mediapipe.tasks.python.components.containers.landmark import NormalizedLandmark

            points = np.array(read["landmarks"]).reshape(-1, 3)
            return vision.FaceLandmarkerResult(
                face_landmarks=[[NormalizedLandmark(x=x, y=y, z=z) for x, y, z in points]],
                face_blendshapes=[[Category(index=i, score=s, category_name=n)
                                   for i, (n, s) in enumerate(zip(BLENDSHAPE_NAMES, read["blendshapes"]))]],
                facial_transformation_matrixes=[np.array(read["matrix"]).reshape(4, 4)])

    pytest.importorskip("mediapipe")
    from genaffect.models.expression.expression_estimator import ExpressionEstimator

    estimator = ExpressionEstimator(Landmarker(), "stand-in for face_landmarker.task")
    from_wheel = GenAffectWarpExpression().warp(as_image(rgb), happy, estimator=estimator, **DEFAULTS)
    motion = face_motion.face_motion()
    face = face_motion.pose_face(motion.mesh, np.array(read["landmarks"]).reshape(-1, 3), read["blendshapes"],
                                 read["head_pose"], 512, 512)
    engine = photo_warp.warp_photo(motion, rgb, face, estimator_target("happy"))
    wheel_pixels = (from_wheel[0][0].numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(wheel_pixels, engine.image)
    core_pixels = (from_core[0][0].numpy() * 255).round().astype(np.uint8)
    assert np.abs(core_pixels.astype(int) - engine.image).mean() < 0.05  # core's depth is float32, rescaled


def test_head_sliders_gaze_and_intensity_reach_the_warp(astronaut):
    rgb, read = astronaut
    payload = core_payload(read)
    warp = GenAffectWarpExpression()
    still = GenAffectExpressionEditor().edit(1.0)[0]
    turned = GenAffectExpressionEditor().edit(1.0, head_yaw=10.0)[0]
    assert still.labels == ["neutral"] and turned.head_turn.tolist() == [[10.0, 0.0, 0.0]]
    base = warp.warp(as_image(rgb), still, face_landmarks=payload, **DEFAULTS)[0]
    by_editor = warp.warp(as_image(rgb), turned, face_landmarks=payload, **DEFAULTS)[0]
    by_node = warp.warp(as_image(rgb), still, face_landmarks=payload, **{**DEFAULTS, "yaw": 10.0})[0]
    assert torch.equal(by_editor, by_node) and not torch.equal(by_editor, base)
    looked = warp.warp(as_image(rgb), still, face_landmarks=payload, **{**DEFAULTS, "gaze_horizontal": 0.8})[0]
    assert (torch.abs(looked - base).amax(dim=-1) > 0.05).sum() > 20
    unchanged = warp.warp(as_image(rgb), still, face_landmarks=payload, **{**DEFAULTS, "intensity": 0.0})
    assert np.array_equal((unchanged[0][0].numpy() * 255).round(), rgb) and unchanged[1].sum() == 0
    with pytest.raises(GenAffectInputError, match="at most 30"):
        warp.warp(as_image(rgb), turned, face_landmarks=payload, **{**DEFAULTS, "yaw": 25.0})


def test_progress_moves_per_warp_and_cancel_stops_the_run(astronaut, monkeypatch):
    rgb, read = astronaut
    moves = []

    class Bar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            moves.append((value, total))

    monkeypatch.setattr(comfy_host, "progress_bar", Bar)
    presets = GenAffectExpressionPreset().build("happy, sad, angry", 1.0)[0]
    GenAffectWarpExpression().warp(as_image(rgb, rgb), presets, face_landmarks=core_payload(read, 2), **DEFAULTS)
    assert moves[-6:] == [(i, 6) for i in range(1, 7)]  # after the faces were read, one step per warp

    class Interrupted(Exception):
        pass

    calls = []

    def cancel_on_the_fourth_check():
        calls.append(1)
        if len(calls) == 4:
            raise Interrupted

    monkeypatch.setattr(comfy_host, "check_interrupted", cancel_on_the_fourth_check)
    with pytest.raises(Interrupted):
        GenAffectWarpExpression().warp(as_image(rgb, rgb), presets, face_landmarks=core_payload(read, 2), **DEFAULTS)
    assert len(calls) == 4  # 2 photos read, then the second warp: stopped there


def test_bad_requests_are_refused_with_the_reason(astronaut):
    rgb, read = astronaut
    happy = GenAffectExpressionPreset().build("happy", 1.0)[0]
    warp = GenAffectWarpExpression()
    with pytest.raises(NoFaceFoundError, match="No face found"):
        warp.warp(as_image(rgb), happy, face_landmarks=core_payload(read, 1, empty=(0,)), **DEFAULTS)
    with pytest.raises(GenAffectInputError, match="Image 0: no face detected"):
        warp.warp(as_image(rgb), happy, face_landmarks=core_payload(read, 1, empty=(0,)),
                  **{**DEFAULTS, "on_no_face": "error"})
    with pytest.raises(GenAffectInputError, match="connect an expression estimator"):
        warp.warp(as_image(rgb), happy, **DEFAULTS)
    with pytest.raises(GenAffectInputError, match="0..255 pixels"):
        warp.warp(torch.from_numpy(rgb[None].astype(np.float32)), happy, face_landmarks=core_payload(read), **DEFAULTS)
    flame_only = type(happy)(labels=["f"], flame=np.zeros((1, 55), np.float32))
    with pytest.raises(GenAffectInputError, match="needs blendshapes"):
        warp.warp(as_image(rgb), flame_only, face_landmarks=core_payload(read), **DEFAULTS)
