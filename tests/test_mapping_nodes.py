"""Fit and Apply Expression Mapping nodes: fit on estimated frames, save numbered files, fill FLAME-55."""

from __future__ import annotations

import numpy as np
import pytest
from genaffect import NODE_CLASS_MAPPINGS
from genaffect.models.errors import GenAffectInputError
from genaffect.models.expression.batch import ExpressionBatch
from mediapipe_results import MarkerLandmarker
from tiny_insightface import faces_image, to_image_tensor

FIT = NODE_CLASS_MAPPINGS["GenAffectFitExpressionMapping"]
APPLY = NODE_CLASS_MAPPINGS["GenAffectApplyExpressionMapping"]


def _frames_with_known_map(count=200, seed=0):
    """Expressions whose FLAME-55 is an exact linear function of the blendshapes, inside SMIRK's limits."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((52, 55)) * 0.05
    weights[:, 50:] = 0.0
    bias = np.zeros(55)
    bias[50:53] = [0.3, 0.3, 0.1]
    blendshapes = rng.random((count, 52)).astype(np.float32)
    flame = (blendshapes @ weights + bias).astype(np.float32)
    return ExpressionBatch([f"frame {i}" for i in range(count)], blendshapes=blendshapes, flame=flame), weights, bias


def test_fit_reports_heldout_r2_and_saves_numbered_files(models_dir):
    frames, _, _ = _frames_with_known_map()
    result = FIT().fit(frames, 1e-6, 0.2, "anna")
    mapping, report = result["result"]
    assert mapping.heldout_r2 > 0.99 and "R² 1.000 on 40 held-out frames" in report
    first = models_dir / "genaffect" / "mappings" / "anna_00001.safetensors"
    assert first.is_file() and str(first) in report and result["ui"]["text"] == [report]
    FIT().fit(frames, 1e-6, 0.2, "anna")
    assert (models_dir / "genaffect" / "mappings" / "anna_00002.safetensors").is_file()  # never overwritten
    assert "mappings/anna_00002.safetensors" in APPLY.INPUT_TYPES()["required"]["mapping_file"][0]


def test_fit_without_save_writes_nothing(models_dir):
    frames, _, _ = _frames_with_known_map()
    FIT().fit(frames, 0.01, 0.2, "  ")
    assert not (models_dir / "genaffect").exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs"])
def test_fit_refuses_file_names_with_folders(models_dir, name):
    frames, _, _ = _frames_with_known_map()
    with pytest.raises(GenAffectInputError, match="no folders"):
        FIT().fit(frames, 0.01, 0.2, name)


@pytest.mark.parametrize("name", ["CON", "nul", "com1.map", "LPT9 "])
def test_fit_refuses_names_windows_reserves_for_devices(models_dir, name):
    frames, _, _ = _frames_with_known_map()
    with pytest.raises(GenAffectInputError, match="Windows reserves for devices"):
        FIT().fit(frames, 0.01, 0.2, name)


def test_fit_needs_flame_and_names_where_it_comes_from():
    preset = NODE_CLASS_MAPPINGS["GenAffectExpressionPreset"]().build("happy, sad", 1.0)[0]
    with pytest.raises(GenAffectInputError, match="Fit Expression Mapping needs flame.*SMIRK loaded"):
        FIT().fit(preset, 0.01, 0.2, "")


def test_apply_fills_flame_for_presets_from_a_saved_file(models_dir):
    frames, weights, bias = _frames_with_known_map()
    FIT().fit(frames, 1e-6, 0.2, "anna")
    preset = NODE_CLASS_MAPPINGS["GenAffectExpressionPreset"]().build("happy, wink left", 1.0)[0]
    assert preset.flame is None
    (filled,) = APPLY().apply(preset, "mappings/anna_00001.safetensors", False)
    assert filled.labels == preset.labels and np.array_equal(filled.blendshapes, preset.blendshapes)
    np.testing.assert_allclose(filled.flame, preset.blendshapes @ weights + bias, atol=1e-4)
    assert preset.flame is None  # the input expression is left as it was


def test_apply_keeps_existing_flame_unless_asked(models_dir):
    frames, _, _ = _frames_with_known_map()
    mapping = FIT().fit(frames, 0.01, 0.2, "")["result"][0]
    marked = ExpressionBatch(["x"], blendshapes=frames.blendshapes[:1], flame=np.full((1, 55), 0.05, np.float32))
    assert APPLY().apply(marked, "(the mapping input)", False, mapping)[0].flame[0, 0] == pytest.approx(0.05)
    assert APPLY().apply(marked, "(the mapping input)", True, mapping)[0].flame[0, 0] != pytest.approx(0.05)


def test_apply_without_any_map_explains(models_dir):
    preset = NODE_CLASS_MAPPINGS["GenAffectExpressionPreset"]().build("happy", 1.0)[0]
    with pytest.raises(GenAffectInputError, match="connect the mapping input"):
        APPLY().apply(preset, "(the mapping input)", False)


def test_video_frames_through_both_estimators_fit_a_map(expression_models):
    # MediaPipe (double) gives varied blendshapes per frame; SMIRK (real encoder, random weights) reads the
    # crops. The two are unrelated here, so the fit works but warns about a low held-out R².
    rng = np.random.default_rng(5)
    estimator, _ = NODE_CLASS_MAPPINGS["GenAffectExpressionEstimatorLoader"]().load("face_landmarker.task", "SMIRK_em1.pt", 4, 0.5)
    estimator.landmarker = MarkerLandmarker(scores=[rng.random(52) for _ in range(12)])
    frames = to_image_tensor(*[faces_image(dict(cx=96 + 8 * (i % 5), cy=128, half=40 + i, identity=i)) for i in range(12)])
    expression = NODE_CLASS_MAPPINGS["GenAffectEstimateExpression"]().estimate(frames, "largest", 0, "skip", estimator=estimator)[0]
    mapping, report = FIT().fit(expression, 0.01, 0.2, "")["result"]
    assert mapping.train_frames + mapping.heldout_frames == 12
    assert "warning: a low R²" in report
