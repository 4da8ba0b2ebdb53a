"""Scores in the manner of PixelSmile's FFE-Bench: targets read from names, the sums on hand-built readings, and the
node and the command on painted faces with real landmarks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from genaffect import NODE_CLASS_MAPPINGS
from genaffect.models.evaluation import expression_score
from genaffect.models.evaluation.face_metrics import ImageMetrics, SetMetrics
from judge_readings import golden, square_shape
from PIL import Image
from tiny_insightface import faces_image, to_image_tensor, write_pack

CLASSES = ("neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted")


def test_targets_are_read_from_folder_or_file_names_and_stand_for_presets():
    assert expression_score.target_of_file("happy/001.png") == "happy"
    assert expression_score.target_of_file(os.path.join("out", "fear", "x.jpg")) == "fear"
    assert expression_score.target_of_file("disgust_12.png") == "disgust"
    assert expression_score.target_of_file("happily-surprised-3.webp") == "happily surprised"
    assert expression_score.target_of_file("sad.png") == "sad" and expression_score.target_of_file("img_3.png") is None
    assert [expression_score.preset_for(t) for t in ("fear", "disgust", "confused", "happy")] == [
        "fearful", "disgusted", "skeptical", "happy"]


def _read(label: str, top: str, probabilities: dict[str, float], identity=0.7) -> ImageMetrics:
    full = dict.fromkeys(CLASSES, 0.0) | probabilities
    return ImageMetrics(0, label, True, identity_cosine=identity, copy_suspected=False, judge="landmark judge",
                        judge_probabilities=full, judge_top=top, asked_classes=[], judge_correct=None)


def test_the_scores_add_up_hand_built_readings():
    reads = [
        (_read("fear", "surprised", {"surprised": 0.6, "fearful": 0.3, "neutral": 0.1}), "fear"),  # confused pair
        (_read("fear", "fearful", {"fearful": 0.9, "surprised": 0.1}), "fear"),
        (_read("surprised", "surprised", {"surprised": 0.8, "happy": 0.2}), "surprised"),
        # read as neutral overall, but of the six basic categories happy is the likeliest: right for Acc-6
        (_read("happy", "neutral", {"neutral": 0.5, "happy": 0.4, "sad": 0.1}), "happy"),
        (_read("confused", "neutral", {"neutral": 1.0}), "confused"),  # no class for it: not scored
    ]
    for m, target in reads:  # as Face Metrics fills them
        from genaffect.models.evaluation.expression_judge import asked_classes

        m.asked_classes = list(asked_classes(expression_score.preset_for(target)))
        m.judge_correct = (m.judge_top in m.asked_classes) if m.asked_classes else None
    metrics = SetMetrics([m for m, _ in reads], 5, 0.7, 0.7, None, None, None, None)
    score = expression_score.score(metrics, [t for _, t in reads])
    assert (score.acc6, score.acc6_faces) == (pytest.approx(3 / 4), 4)
    assert (score.accuracy, score.accuracy_faces) == (pytest.approx(2 / 4), 4)
    assert score.not_scored == ["confused"] and score.faces == 5
    assert score.confusion["fearful"]["surprised"] == 1 and score.confusion["happy"]["neutral"] == 1
    # fear read as surprise 1 of 2, surprise as fear 0 of 1; fear as sadness 0 of 2 (no sad faces)
    assert score.pair_confusion == {"fearful/surprised": pytest.approx((0.5 + 0.0) / 2), "sad/fearful": 0.0}
    assert score.structural_confusion == pytest.approx(0.125) and score.copies == 0.0
    assert "Acc-6 (six basic categories): 75.0% of 4" in score.summary()
    metrics.pixel_accuracy, metrics.judges_agreement, metrics.both_accuracy = 0.5, 0.25, 0.75  # with a network
    with_network = expression_score.score(metrics, [t for _, t in reads])
    assert "pixel judge accuracy 50.0%, judges agree on 25.0%, both judges averaged 75.0%" in with_network.summary()


@pytest.fixture
def painted_readings():
    """Painted faces the landmarker double gives real landmarks: a person's neutral photo (the reference), and
    photos of them showing the expressions the judge reads right on them (golden data)."""
    readings = golden()
    row = int(np.flatnonzero(readings["reference"] >= 0)[0])
    person = readings["person"][row]
    reference = int(readings["reference"][row])
    rows = [i for i in np.flatnonzero(readings["person"] == person) if i != reference]
    return readings, reference, rows


def test_the_command_scores_a_folder_of_faces_named_by_target(tmp_path, models_dir, painted_readings, monkeypatch):
    from genaffect.models import score_expressions
    from genaffect.models.expression.expression_estimator import ExpressionEstimator
    from mediapipe_results import MarkerLandmarker

    readings, reference, rows = painted_readings
    write_pack(str(models_dir / "insightface"))
    folder = tmp_path / "generated"
    shapes = [square_shape(readings, reference)]  # the reference photo is estimated first
    for k, row in enumerate(rows):
        label = str(readings["labels"][row])
        (folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(faces_image(dict(cx=128, cy=128, half=48, photo=1 + k))).save(folder / label / f"{k}.png")
    # the images are read in sorted order: give the double their shapes in that order
    ordered = sorted((str(readings["labels"][row]), f"{k}.png", row) for k, row in enumerate(rows))
    shapes += [square_shape(readings, row) for _, _, row in ordered]
    Image.fromarray(faces_image(dict(cx=128, cy=128, half=48))).save(tmp_path / "me.png")
    (folder / "notes.png").write_bytes((tmp_path / "me.png").read_bytes())  # no target in its name: left out
    monkeypatch.setattr(score_expressions, "load_estimator",
                        lambda path: ExpressionEstimator(MarkerLandmarker(shapes=shapes), path))
    code = score_expressions.main(["--folder", str(folder), "--reference", str(tmp_path / "me.png"), "--models-dir",
                                   str(models_dir), "--json", str(tmp_path / "s.json"), "--chart",
                                   str(tmp_path / "s.png")])
    assert code == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["images"] == len(rows) and result["faces"] == len(rows)
    assert result["accuracy"] is not None and result["identity_similarity"] > 0.5 and result["copies"] == 0.0
    truth = [str(readings["labels"][row]) for _, _, row in ordered]
    read_right = [readings["classes"][int(np.argmax(readings["relative"][row]))] == label
                  for label, _, row in ordered]
    assert result["accuracy"] == pytest.approx(np.mean(read_right)), truth  # the golden readings, added up
    with Image.open(tmp_path / "s.png") as chart:
        assert chart.size[0] >= 640


def test_the_node_scores_a_batch_with_one_target_per_image(analyzer, painted_readings):
    from genaffect.models.expression.expression_estimator import ExpressionEstimator
    from genaffect.models.face.identity import extract_identity
    from mediapipe_results import MarkerLandmarker

    readings, _, rows = painted_readings
    estimator = ExpressionEstimator(MarkerLandmarker(shapes=[square_shape(readings, r) for r in rows]), "x.task")
    identity = extract_identity(analyzer, [faces_image(dict(cx=128, cy=128))])[0]
    images = to_image_tensor(*[faces_image(dict(cx=128, cy=128, photo=1)) for _ in rows])
    targets = ", ".join(str(readings["labels"][r]) for r in rows)
    result = NODE_CLASS_MAPPINGS["GenAffectScoreExpressions"]().score(images, targets, analyzer, identity, estimator)
    score_json, chart, summary = result["result"]
    assert json.loads(score_json)["accuracy_faces"] == len(rows) and chart.shape[0] == 1
    assert "landmark judge, face alone" in summary  # no reference expression: each face is read alone
    with pytest.raises(Exception, match="targets for"):
        NODE_CLASS_MAPPINGS["GenAffectScoreExpressions"]().score(images, "happy, sad", analyzer, identity, estimator)
