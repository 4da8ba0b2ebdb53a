"""Face Metrics and Expression Sheet nodes, called as ComfyUI calls them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from genaffect import NODE_CLASS_MAPPINGS
from genaffect.models.drawing.pictures import CURVE_COLOURS, MISSING
from genaffect.models.errors import GenAffectInputError
from tiny_insightface import blank_image, faces_image, to_image_tensor

METRICS = NODE_CLASS_MAPPINGS["GenAffectFaceMetrics"]
SHEET = NODE_CLASS_MAPPINGS["GenAffectExpressionSheet"]


@pytest.fixture
def identity_and_analyzer(tiny_pack):
    analyzer = NODE_CLASS_MAPPINGS["GenAffectFaceAnalyzerLoader"]().load("antelopev2", "pack default", "CPU", 256, 0.5)[0]
    references = to_image_tensor(faces_image(dict(cx=128, cy=128)))
    identity = NODE_CLASS_MAPPINGS["GenAffectExtractIdentity"]().extract(analyzer, references, "largest", 0, "skip")[0]
    return identity, analyzer


def test_metrics_node_gives_json_chart_and_summary_with_target_labels(identity_and_analyzer, expression_models):
    identity, analyzer = identity_and_analyzer
    estimator = NODE_CLASS_MAPPINGS["GenAffectExpressionEstimatorLoader"]().load("face_landmarker.task", "SMIRK_em1.pt", 4, 0.5)[0]
    target = NODE_CLASS_MAPPINGS["GenAffectExpressionPreset"]().build("happy, sad, surprised", 1.0)[0]
    images = to_image_tensor(faces_image(dict(cx=128, cy=128)), blank_image(), faces_image(dict(cx=96, cy=96, half=56)))
    result = METRICS().measure(images, analyzer, identity, target, estimator)
    metrics_json, chart, summary, curves = result["result"]
    data = json.loads(metrics_json)
    assert [image["label"] for image in data["images"]] == ["happy", "sad", "surprised"]
    assert data["faces_found"] == 2 and data["images"][1]["face_found"] is False
    assert data["blendshape_l1_mean"] is not None and data["flame_l2_mean"] is None  # presets carry no FLAME-55
    assert "measured" not in data and "expected" not in data  # the per-frame arrays are for the curves only
    assert chart.shape[0] == 1 and chart.shape[-1] == 3 and "faces found: 2/3" in summary
    assert result["ui"]["text"] == [summary]
    # the curves: expected and measured drawn in the first curve colour, a red tick where no face was found
    drawn = {tuple(pixel) for pixel in (curves[0].numpy() * 255).round().astype(int).reshape(-1, 3).tolist()}
    assert CURVE_COLOURS[0] in drawn and MISSING in drawn


def test_sheet_lays_out_a_grid_with_labels_and_metric_captions(identity_and_analyzer):
    identity, analyzer = identity_and_analyzer
    images = to_image_tensor(*[faces_image(dict(cx=128, cy=128)) for _ in range(5)])
    metrics_json = METRICS().measure(images, analyzer, identity)["result"][0]
    (sheet,) = SHEET().build(images, 0, "Anna", labels="a, b, c, d, e", metrics_json=metrics_json)
    assert sheet.shape[0] == 1
    height, width = sheet.shape[1:3]
    assert width > 3 * 256 and width < 4 * 256  # 5 faces -> a 3-column grid
    assert height > 2 * 256 and height < 3 * 256
    # the first cell holds the first image, unchanged
    top_left = (sheet[0] * 255).round().to(torch.uint8).numpy()
    first = (images[0] * 255).round().to(torch.uint8).numpy()
    found = any(np.array_equal(top_left[y:y + 256, 8:8 + 256], first) for y in range(0, 120))
    assert found


def test_sheet_labels_come_from_the_expression_when_the_box_is_empty():
    expression = NODE_CLASS_MAPPINGS["GenAffectExpressionPreset"]().build("happy, sad", 1.0)[0]
    images = to_image_tensor(blank_image(64, 64), blank_image(64, 64))
    (sheet,) = SHEET().build(images, 2, "", expression=expression)
    assert sheet.shape[2] > 2 * 64


def test_sheet_insets_each_images_asked_for_expression_drawn_with_the_face_model():
    from genaffect.models.drawing.face_drawing import draw_face

    expression = NODE_CLASS_MAPPINGS["GenAffectExpressionPreset"]().build("happy, wink left", 1.0)[0]
    images = to_image_tensor(blank_image(128, 128), blank_image(128, 128))
    (with_faces,) = SHEET().build(images, 2, "", expression=expression)
    (plain,) = SHEET().build(images, 2, "", expression=expression, target_faces=False)
    with_faces, plain = ((x[0] * 255).round().to(torch.uint8).numpy() for x in (with_faces, plain))
    changed = np.argwhere(np.any(with_faces != plain, axis=2))
    assert len(changed) > 0
    glyph = draw_face(expression.blendshapes[1], 32)  # 128 px images: a quarter of the width
    found = any(np.array_equal(with_faces[y:y + 32, x:x + 32], glyph)
                for y in range(0, 40) for x in range(128, with_faces.shape[1] - 31))
    assert found  # the second cell shows the wink


def test_sheet_refuses_mismatched_labels_and_foreign_json():
    images = to_image_tensor(blank_image(64, 64), blank_image(64, 64))
    with pytest.raises(GenAffectInputError, match="3 labels for 2 images"):
        SHEET().build(images, 0, "", labels="a, b, c")
    with pytest.raises(GenAffectInputError, match="not the JSON output of GenAffect Face Metrics"):
        SHEET().build(images, 0, "", metrics_json="{not json")
    with pytest.raises(GenAffectInputError, match="describe 1 images but the sheet has 2"):
        SHEET().build(images, 0, "", metrics_json=json.dumps({"images": [{"face_found": False}]}))


@pytest.mark.parametrize("metrics, message", [
    ({"images": "two"}, "not the JSON output of GenAffect Face Metrics"),
    ({"images": [1, 2]}, "not the JSON output of GenAffect Face Metrics"),
    ({"images": [{"face_found": True}, {"face_found": False}]}, "image 1 has identity_cosine None"),
    ({"images": [{"face_found": True, "identity_cosine": "high"}, {"face_found": False}]}, "identity_cosine 'high'"),
    ({"images": [{"face_found": True, "identity_cosine": 0.5, "blendshape_l1": [1]}, {"face_found": False}]},
     "blendshape_l1 \\[1\\]"),
], ids=["images not a list", "entries not objects", "missing similarity", "text similarity", "list error"])
def test_sheet_refuses_malformed_metrics_entries_with_a_clear_error(metrics, message):
    images = to_image_tensor(blank_image(64, 64), blank_image(64, 64))
    with pytest.raises(GenAffectInputError, match=message):
        SHEET().build(images, 0, "", metrics_json=json.dumps(metrics))


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "not the JSON output of GenAffect Face Metrics"),  # nested past Python's limit
    ('{"images": [{"face_found": true, "identity_cosine": NaN}, {"face_found": false}]}', "identity_cosine nan"),
    ('{"images": [{"face_found": true, "identity_cosine": 0.5, "blendshape_l1": Infinity}, {"face_found": false}]}',
     "blendshape_l1 inf"),
])
def test_metrics_json_nested_too_deep_or_holding_nan_is_refused(text, message):
    images = to_image_tensor(blank_image(64, 64), blank_image(64, 64))
    with pytest.raises(GenAffectInputError, match=message):
        SHEET().build(images, 0, "", metrics_json=text)
