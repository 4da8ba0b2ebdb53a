"""Blendshapes -> FLAME-55 ridge mapping: recovery, held-out R², file round trip and bad files."""

import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError, ModelFileError
from genaffect.models.expression.expression_mapping import fit_mapping, load_mapping, r2_score, save_mapping


def synthetic(count=200, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    true_weights = rng.standard_normal((52, 55)) * 0.5
    true_bias = rng.standard_normal(55) * 0.1
    blendshapes = rng.random((count, 52))
    flame = blendshapes @ true_weights + true_bias + noise * rng.standard_normal((count, 55))
    return blendshapes, flame, true_weights


def test_fit_recovers_a_known_linear_map():
    blendshapes, flame, true_weights = synthetic()
    mapping = fit_mapping(blendshapes, flame, ridge=1e-6)
    assert mapping.heldout_r2 > 0.99
    assert np.allclose(mapping.weights, true_weights, atol=1e-3)
    predicted = mapping.apply(blendshapes[:20])
    assert np.allclose(predicted[:, :50], flame[:20, :50], atol=1e-3)
    # eyelids and jaw keep SMIRK's constraints, which the Expression Adapter was trained within
    assert predicted[:, 50:52].min() >= 0 and predicted[:, 50:52].max() <= 1 and predicted[:, 52].min() >= 0
    assert np.abs(predicted[:, 53:]).max() <= np.float32(0.2)  # compared as float32 under numpy 1.x too


def test_unrelated_targets_give_a_low_heldout_r2():
    rng = np.random.default_rng(3)
    mapping = fit_mapping(rng.random((200, 52)), rng.standard_normal((200, 55)), ridge=1.0)
    assert mapping.heldout_r2 < 0.1


def test_mapping_file_round_trip_keeps_weights_and_stats(tmp_path):
    blendshapes, flame, _ = synthetic(noise=0.01)
    mapping = fit_mapping(blendshapes, flame)
    path = str(tmp_path / "person.safetensors")
    save_mapping(mapping, path)
    loaded = load_mapping(path)
    assert np.allclose(loaded.weights, mapping.weights, atol=1e-6) and np.allclose(loaded.bias, mapping.bias, atol=1e-6)
    assert loaded.heldout_r2 == pytest.approx(mapping.heldout_r2) and loaded.train_frames == mapping.train_frames


def test_wrong_files_and_inputs_are_explained(tmp_path):
    from safetensors.numpy import save_file

    other = str(tmp_path / "lora.safetensors")
    save_file({"weights": np.zeros((52, 55), np.float32)}, other, metadata={"format": "something else"})
    with pytest.raises(ModelFileError, match="not a GenAffect expression mapping"):
        load_mapping(other)
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        load_mapping(str(garbage))
    with pytest.raises(GenAffectInputError, match="too few"):
        fit_mapping(np.zeros((2, 52)), np.zeros((2, 55)))
    with pytest.raises(GenAffectInputError, match="expected"):
        fit_mapping(np.zeros((20, 51)), np.zeros((20, 55)))


def test_r2_is_one_for_perfect_predictions():
    truth = np.random.default_rng(0).standard_normal((10, 3))
    assert r2_score(truth, truth) == 1.0


def _mapping_file(tmp_path, name, metadata=None, tensors=None):
    from safetensors.numpy import save_file

    good = {"weights": np.zeros((52, 55), np.float32), "bias": np.zeros(55, np.float32)}
    base = {"format": "genaffect.blendshapes_to_flame", "format_version": "1",
            "stats": '{"ridge": 0.01, "train_frames": 8, "heldout_frames": 2, "heldout_r2": 0.9}'}
    path = str(tmp_path / f"{name}.safetensors")
    save_file({**good, **(tensors or {})}, path, metadata={**base, **(metadata or {})})
    return path


BAD_MAPPING_FILES = {
    "no_bias": (None, {"bias": None}, "holds .*'weights'.*; a mapping holds weights 52x55 and bias 55"),
    "huge_extra_tensor": (None, {"junk": np.zeros((1, 1), np.float32)}, "holds .*'junk'"),
    "wrong_shape": (None, {"weights": np.zeros((55, 52), np.float32)}, r"holds .*\(55, 52\)"),
    "integer_values": (None, {"weights": np.zeros((52, 55), np.int32)}, r"stores its values as .*'I32'"),
    "nan_weight": (None, {"bias": np.full(55, np.nan, np.float32)}, "bias holds NaN"),
    "malformed_stats": ({"stats": "{oops"}, None, "stats is not valid JSON"),
    "stats_list": ({"stats": "[1]"}, None, "stats is a list"),
    "text_stat": ({"stats": '{"train_frames": "many"}'}, None, "stats.train_frames is 'many'"),
    "newer_version": ({"format_version": "7"}, None, "format_version is '7'"),
    "version_text": ({"format_version": "v1"}, None, "format_version is 'v1'"),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPPING_FILES))
def test_a_damaged_mapping_file_is_refused_when_loaded_naming_the_file_and_field(tmp_path, case):
    metadata, tensors, message = BAD_MAPPING_FILES[case]
    if tensors and any(value is None for value in tensors.values()):
        from safetensors.numpy import save_file

        path = str(tmp_path / f"{case}.safetensors")
        save_file({"weights": np.zeros((52, 55), np.float32)}, path, metadata={
            "format": "genaffect.blendshapes_to_flame", "format_version": "1"})
    else:
        path = _mapping_file(tmp_path, case, metadata, tensors)
    with pytest.raises(ModelFileError, match=message) as refused:
        load_mapping(path)
    assert path in str(refused.value) and "Fit Expression Mapping" in str(refused.value)


def test_a_singular_fit_without_ridge_is_a_clear_error():
    same = np.tile(np.random.default_rng(0).random(52), (20, 1))  # one frame twenty times: nothing varies
    with pytest.raises(GenAffectInputError, match="do not vary enough .* raise ridge above 0"):
        fit_mapping(same, np.zeros((20, 55)), ridge=0.0)


@pytest.mark.parametrize("ridge, heldout, message", [
    (float("nan"), 0.2, "ridge must be a number of 0 or more"), (float("inf"), 0.2, "ridge must be a number"),
    (0.01, 1.0, "heldout_fraction must be from 0 up to"), (0.01, -0.1, "heldout_fraction must be from 0 up to"),
    (0.01, 0.5, "leaves 6 to fit on; fitting needs 10"),
])
def test_fit_settings_that_would_fit_on_too_few_frames_or_nonsense_are_refused(ridge, heldout, message):
    blendshapes, flame, _ = synthetic(count=12)
    with pytest.raises(GenAffectInputError, match=message):
        fit_mapping(blendshapes, flame, ridge=ridge, heldout_fraction=heldout)
