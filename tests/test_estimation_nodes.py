"""The estimator loader and Estimate Expression nodes, called as ComfyUI calls them."""

from __future__ import annotations

import numpy as np
import pytest

from genaffect import NODE_CLASS_MAPPINGS
from genaffect.models.errors import GenAffectInputError, ModelFileError

from tiny_insightface import blank_image, faces_image, to_image_tensor

LOADER = NODE_CLASS_MAPPINGS["GenAffectExpressionEstimatorLoader"]
ESTIMATE = NODE_CLASS_MAPPINGS["GenAffectEstimateExpression"]
NO_SMIRK = "none (no FLAME-55)"


def test_loader_lists_the_files_in_the_model_folders(expression_models):
    required = LOADER.INPUT_TYPES()["required"]
    assert required["landmarker"][0] == ["face_landmarker.task"]
    assert required["smirk"][0] == [NO_SMIRK, "SMIRK_em1.pt"]


def test_loader_with_smirk_gives_flame_and_says_where_it_runs(expression_models):
    estimator, info = LOADER().load("face_landmarker.task", "SMIRK_em1.pt", 4, 0.5)
    assert estimator.has_flame and "SMIRK expression encoder" in info and "on cpu" in info
    estimator, info = LOADER().load("face_landmarker.task", NO_SMIRK, 4, 0.5)
    assert not estimator.has_flame and "FLAME-55: off" in info


def test_missing_landmarker_names_the_url_and_folder(models_dir):
    assert LOADER.INPUT_TYPES()["required"]["landmarker"][0] == ["face_landmarker.task"]  # listed even when absent
    with pytest.raises(ModelFileError) as caught:
        LOADER().load("face_landmarker.task", NO_SMIRK, 4, 0.5)
    message = str(caught.value)
    assert "storage.googleapis.com" in message and str(models_dir / "mediapipe") in message


@pytest.mark.parametrize("name", ["../smirk/SMIRK_em1.pt", "/etc/passwd", "SMIRK_em2.pt"])
def test_a_smirk_name_outside_the_listing_is_refused(expression_models, name):
    with pytest.raises(ModelFileError, match="is not in models/smirk/"):
        LOADER().load("face_landmarker.task", name, 4, 0.5)


def test_smirk_conversion_writes_safetensors_that_load_the_same(expression_models):
    estimator, info = LOADER().load("face_landmarker.task", "SMIRK_em1.pt", 4, 0.5, convert_smirk_to_safetensors=True)
    converted = expression_models / "smirk" / "SMIRK_em1_expression_encoder.safetensors"
    assert converted.is_file() and str(converted) in info
    assert "SMIRK_em1_expression_encoder.safetensors" in LOADER.INPUT_TYPES()["required"]["smirk"][0]
    again, _ = LOADER().load("face_landmarker.task", "SMIRK_em1_expression_encoder.safetensors", 4, 0.5)
    images = to_image_tensor(faces_image(dict(cx=128, cy=128, half=48)))
    first = ESTIMATE().estimate(images, "largest", 0, "skip", estimator=estimator)[0]
    second = ESTIMATE().estimate(images, "largest", 0, "skip", estimator=again)[0]
    np.testing.assert_array_equal(first.flame, second.flame)


def test_estimate_node_outputs_expressions_previews_and_report(expression_models):
    estimator, _ = LOADER().load("face_landmarker.task", "SMIRK_em1.pt", 4, 0.5)
    images = to_image_tensor(faces_image(dict(cx=128, cy=128)), blank_image(), faces_image(dict(cx=96, cy=96, half=56)))
    expression, preview, report = ESTIMATE().estimate(images, "largest", 0, "skip", estimator=estimator, labels="smile\nblank, frown")
    assert expression.labels == ["smile", "frown"]
    assert expression.blendshapes.shape == (2, 52) and expression.flame.shape == (2, 55)
    assert expression.head_pose.shape == (2, 3) and expression.landmarks.shape == (2, 478, 3)
    assert preview.shape == (3, 256, 256 + int(256 * 0.6), 3)  # every image, skipped ones captioned in red
    assert "image 1 skipped: no face detected" in report


def test_estimate_node_with_wrong_label_count_explains(expression_models):
    estimator, _ = LOADER().load("face_landmarker.task", NO_SMIRK, 4, 0.5)
    with pytest.raises(GenAffectInputError, match="2 labels given for 1 images"):
        ESTIMATE().estimate(to_image_tensor(faces_image(dict(cx=128, cy=128))), "largest", 0, "skip", estimator=estimator, labels="a, b")


def test_a_large_photos_preview_is_drawn_scaled_down_to_1024_on_its_longer_side():
    from genaffect.models.drawing.pictures import preview_size
    from genaffect.models.expression.expression_estimator import ExpressionEstimator
    from mediapipe_results import MarkerLandmarker
    from PIL import Image

    assert preview_size((3000, 4000, 3)) == (750, 1000) and preview_size((1025, 700, 3)) == (513, 350)
    assert preview_size((1024, 256, 3)) == (1024, 256)
    photo = np.repeat(np.repeat(faces_image(dict(cx=128, cy=96, half=48), width=256, height=192), 8, 0), 8, 1)
    estimator = ExpressionEstimator(MarkerLandmarker(scores=[np.linspace(0, 1, 52, dtype=np.float32)]),
                                    "face_landmarker.task")
    expression, preview, _ = ESTIMATE().estimate(to_image_tensor(photo), "largest", 0, "skip", estimator=estimator)
    assert len(expression.labels) == 1  # the face was read on the full 2048 x 1536 photo
    assert preview.shape == (1, 768, 1024 + int(1024 * 0.6), 3)
    shown = preview[0, :, :1024].numpy()
    scaled = np.asarray(Image.fromarray(photo).reduce(2)) / 255.0
    assert np.abs(shown - scaled).mean() < 0.02  # the photo itself, scaled, under the landmark dots
    assert np.abs(shown - scaled).max() > 0.2  # and the dots drawn on it
    assert preview[0, :, 1024:].std() > 0.05  # the panel has its bars and names
