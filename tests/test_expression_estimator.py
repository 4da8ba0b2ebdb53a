"""Expression estimation: face choice, skipping, SMIRK crops and FLAME-55, MediaPipe model loading."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from genaffect.models.errors import GenAffectInputError, ModelFileError
from genaffect.models.expression import expression_estimator, smirk_encoder
from mediapipe_results import MarkerLandmarker
from smirk_weights import published_layout_weights
from tiny_insightface import blank_image, faces_image


@pytest.fixture(scope="module")
def smirk_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("smirk") / "SMIRK_em1.pt"
    torch.save(published_layout_weights(0), path)
    return str(path)


def _estimator(smirk_file=None, **landmarker):
    smirk = smirk_encoder.load_expression_encoder(smirk_file) if smirk_file else None
    return expression_estimator.ExpressionEstimator(MarkerLandmarker(**landmarker), "face_landmarker.task", smirk, smirk_file or "")


def test_each_image_gives_blendshapes_landmarks_and_pose_labelled():
    scores = [np.full(52, 0.1, np.float32), np.full(52, 0.7, np.float32)]
    frames = [faces_image(dict(cx=128, cy=128)), faces_image(dict(cx=96, cy=120, half=30))]
    estimation = expression_estimator.estimate_expressions(_estimator(scores=scores, yaw=25.0), frames, ["calm", "tense"])
    batch = estimation.expression
    assert batch.labels == ["calm", "tense"]
    assert np.allclose(batch.blendshapes, np.stack(scores))
    assert batch.landmarks.shape == (2, 478, 3)
    assert np.allclose(batch.head_pose[:, 0], 25.0, atol=1e-3)
    assert batch.flame is None  # no SMIRK: absent, never zeros
    assert abs(float(batch.landmarks[1, :, 0].mean()) - 96 / 256) < 0.02


def test_flame_comes_from_smirk_on_the_landmark_crop(smirk_file):
    frame = faces_image(dict(cx=128, cy=120, half=48, identity=3))
    estimator = _estimator(smirk_file)
    batch = expression_estimator.estimate_expressions(estimator, [frame]).expression
    assert batch.flame.shape == (1, 55)
    assert 0.0 <= batch.flame[0, 50:52].min() and batch.flame[0, 50:52].max() <= 1.0
    assert batch.flame[0, 52] >= 0.0 and np.abs(batch.flame[0, 53:55]).max() <= np.float32(0.2)  # float32 0.2 (numpy 1)
    # the same numbers as cropping by hand around the face's landmarks and running the encoder
    pixels = batch.landmarks[0, :, :2] * [256, 256]
    crop = smirk_encoder.warp_crop(frame, smirk_encoder.crop_matrix(pixels))
    np.testing.assert_allclose(batch.flame, smirk_encoder.encode(estimator.smirk, crop[None]), atol=1e-5)


def test_faceless_and_tiny_images_are_skipped_with_a_warning(caplog):
    frames = [faces_image(dict(cx=128, cy=128)), blank_image(), np.zeros((1, 1, 3), np.uint8), faces_image(dict(cx=64, cy=64))]
    with caplog.at_level(logging.WARNING):
        estimation = expression_estimator.estimate_expressions(_estimator(), frames)
    assert estimation.image_indices == [0, 3]
    assert estimation.expression.labels == ["image 0", "image 3"]
    assert [s.image_index for s in estimation.skipped] == [1, 2]
    assert "no face detected" in caplog.text and "too small" in caplog.text
    assert "image 1 skipped" in estimation.report()


def test_faceless_image_is_an_error_when_asked():
    with pytest.raises(GenAffectInputError, match="Image 1: no face detected.*on_no_face"):
        expression_estimator.estimate_expressions(_estimator(), [faces_image(dict(cx=128, cy=128)), blank_image()], on_no_face="error")


def test_no_face_anywhere_is_an_error_listing_every_image():
    with pytest.raises(GenAffectInputError, match="image 0: no face detected; image 1: no face detected"):
        expression_estimator.estimate_expressions(_estimator(), [blank_image(), blank_image()])


def test_face_order_and_index_pick_the_same_face_as_identity_extraction():
    frame = faces_image(dict(cx=64, cy=128, half=20), dict(cx=192, cy=128, half=50))
    right = expression_estimator.estimate_expressions(_estimator(), [frame], face_order="left to right", face_index=1)
    largest = expression_estimator.estimate_expressions(_estimator(), [frame], face_order="largest", face_index=0)
    for estimation in (right, largest):
        assert float(estimation.expression.landmarks[0, :, 0].mean()) > 0.6
    assert right.faces_in_image == [2]
    missing = expression_estimator.estimate_expressions(
        _estimator(), [frame, faces_image(dict(cx=128, cy=128))], face_index=1)
    assert missing.image_indices == [0] and "only 1 face(s) found" in missing.skipped[0].reason


def test_labels_must_match_the_images():
    with pytest.raises(GenAffectInputError, match="2 labels given for 1 images"):
        expression_estimator.estimate_expressions(_estimator(), [faces_image(dict(cx=128, cy=128))], ["a", "b"])


def test_missing_landmarker_names_the_download_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match=r"face_landmarker\.task.*storage\.googleapis\.com.*models/mediapipe/"):
        expression_estimator.create_face_landmarker(str(tmp_path / "face_landmarker.task"))


def _zip_without_models() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("readme.txt", "a zip, but not MediaPipe's model bundle")
    return buffer.getvalue()


@pytest.mark.parametrize("content", [b"not a zip", b"", _zip_without_models()], ids=["garbage", "empty", "other_zip"])
def test_broken_landmarker_file_is_reported_not_crashed(tmp_path, content):
    path = tmp_path / "face_landmarker.task"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a usable MediaPipe face landmarker"):
        expression_estimator.create_face_landmarker(str(path))


def test_mediapipe_image_is_rgb_uint8_only():
    with pytest.raises(GenAffectInputError, match="RGB uint8"):
        expression_estimator.to_mediapipe_image(np.zeros((8, 8, 4), np.uint8))


# --- the real MediaPipe runtime on a real photo ---------------------------------------------------

@pytest.fixture(scope="session")
def face_detector_model(tmp_path_factory):
    """face_detection_short_range.tflite from the mediapipe 0.10.21 wheel (Apache-2.0), via pip download."""
    folder = tmp_path_factory.mktemp("mediapipe_wheel")
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(folder), "mediapipe==0.10.21"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("pip download mediapipe==0.10.21 timed out; the package registry is unreachable")
    wheels = [name for name in os.listdir(folder) if name.endswith(".whl")]
    if done.returncode != 0 or not wheels:
        pytest.skip(f"could not pip download mediapipe==0.10.21 (registry unreachable?): {done.stderr.strip()[-300:]}")
    with zipfile.ZipFile(folder / wheels[0]) as wheel:
        model = wheel.read("mediapipe/modules/face_detection/face_detection_short_range.tflite")
    path = folder / "face_detection_short_range.tflite"
    path.write_bytes(model)
    return str(path)


def test_real_mediapipe_face_detector_finds_the_astronaut_through_our_image_conversion(face_detector_model):
    from genaffect.models.images import image_batch_to_rgb_uint8
    from mediapipe.tasks.python import BaseOptions, vision
    from skimage import data

    photo = data.astronaut()
    frame = image_batch_to_rgb_uint8(torch.from_numpy(photo[None].astype(np.float32) / 255.0))[0]
    options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=face_detector_model))
    with vision.FaceDetector.create_from_options(options) as detector:
        result = detector.detect(expression_estimator.to_mediapipe_image(frame))
    assert len(result.detections) == 1
    box = result.detections[0].bounding_box
    # the eyes found by insightface's alignment test lie inside the box
    for x, y in [(203, 100), (246, 103)]:
        assert box.origin_x < x < box.origin_x + box.width and box.origin_y < y < box.origin_y + box.height
    right_eye = result.detections[0].keypoints[0]
    assert abs(right_eye.x * 512 - 203) < 15 and abs(right_eye.y * 512 - 100) < 15


def test_smirk_runs_in_chunks_with_the_same_result(smirk_file, monkeypatch):
    frames = [faces_image(dict(cx=96 + 8 * i, cy=128, half=40 + 2 * i, identity=i)) for i in range(5)]
    whole = expression_estimator.estimate_expressions(_estimator(smirk_file), frames).expression.flame
    monkeypatch.setattr(expression_estimator, "SMIRK_CHUNK", 2)
    chunked = expression_estimator.estimate_expressions(_estimator(smirk_file), frames).expression.flame
    assert chunked.shape == (5, 55)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)


def test_without_the_mediapipe_package_the_landmarker_says_how_to_install_it_or_use_cores(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_mediapipe(name, *args, **kwargs):
        if name.startswith("mediapipe"):
            raise ImportError("No module named 'mediapipe'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mediapipe)
    with pytest.raises(GenAffectInputError, match="mediapipe package is not installed .* MediaPipe Face Landmarker"):
        expression_estimator.create_face_landmarker(str(tmp_path / "face_landmarker.task"))
