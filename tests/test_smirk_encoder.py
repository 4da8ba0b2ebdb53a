"""SMIRK's expression encoder: timm's layout loads strictly, outputs match timm, crops match SMIRK's demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from genaffect.models.errors import ModelFileError
from genaffect.models.expression import smirk_encoder
from smirk_weights import TIMM_REFERENCE_FILE, published_keys, published_layout_weights, reference_input


@pytest.fixture(scope="module")
def published_checkpoint(tmp_path_factory):
    """A file in SMIRK_em1.pt's layout: the expression encoder plus other SMIRK entries it must ignore."""
    state = published_layout_weights(0)
    state["smirk_encoder.pose_encoder.pose_cam_layers.0.weight"] = torch.zeros(6, 576)
    state["smirk_generator.encoder1.enc1conv1.weight"] = torch.zeros(32, 6, 3, 3)
    path = tmp_path_factory.mktemp("smirk") / "SMIRK_em1.pt"
    torch.save(state, path)
    return str(path)


def _timm_reference(size: int) -> torch.Tensor:
    with open(TIMM_REFERENCE_FILE, encoding="utf-8") as handle:
        return torch.tensor(json.load(handle)["raw_outputs"][str(size)])


@pytest.mark.parametrize("size", [224, 193])
def test_plain_pytorch_encoder_reproduces_timm_outputs(published_checkpoint, size):
    # 193 is odd: TensorFlow "same" padding then pads both sides of the stride-2 convolutions differently.
    model = smirk_encoder.load_expression_encoder(published_checkpoint)
    with torch.no_grad():
        ours = model(reference_input(1, 2, size))
    expected = smirk_encoder.postprocess(_timm_reference(size))
    assert ours.shape == (2, 55)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_outputs_are_postprocessed_like_smirk():
    raw = torch.tensor([[0.0] * 50 + [-0.5, 1.7, -0.3, 0.9, -0.05]])
    out = smirk_encoder.postprocess(raw)[0, 50:].tolist()
    assert out == pytest.approx([0.0, 1.0, 0.0, 0.2, -0.05])


def test_checkpoint_keys_load_strictly():
    model = smirk_encoder.ExpressionEncoder()
    ours = {smirk_encoder.CHECKPOINT_PREFIX + k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == published_keys()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("smirk_encoder.expression_encoder.encoder.blocks.3.1.bn2.running_var"), "1 missing"),
        (lambda s: s.update({"smirk_encoder.expression_encoder.encoder.conv_head.weight": torch.zeros(1)}), "1 unexpected"),
        (lambda s: s.update({"smirk_encoder.expression_encoder.expression_layers.0.weight": torch.zeros(53, 960)}), "wrong shape"),
        (lambda s: s.update({"smirk_encoder.expression_encoder.expression_layers.0.weight":
                             torch.zeros(55, 960, dtype=torch.int8)}), "stored as torch.int8, not floating point"),
        (lambda s: s["smirk_encoder.expression_encoder.expression_layers.0.weight"].fill_(float("inf")),
         "expression_layers.0.weight holds NaN or infinite"),
    ],
    ids=["missing key", "unexpected key", "wrong shape", "quantised", "infinite"],
)
def test_key_or_shape_mismatch_is_reported_by_name(tmp_path, change, message):
    state = published_layout_weights(0)
    change(state)
    path = tmp_path / "SMIRK_em1.pt"
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=message) as caught:
        smirk_encoder.load_expression_encoder(str(path))
    assert str(path) in str(caught.value)


def test_checkpoint_without_expression_encoder_is_refused(tmp_path):
    path = tmp_path / "SMIRK_pose_only.pt"
    torch.save({"smirk_encoder.pose_encoder.x": torch.zeros(1)}, path)
    with pytest.raises(ModelFileError, match="without the expression encoder"):
        smirk_encoder.load_expression_encoder(str(path))


class _Payload:
    def __reduce__(self):
        return (print, ("a pickle that runs code",))


def test_pickle_with_code_is_refused_not_run(tmp_path, capsys):
    path = tmp_path / "SMIRK_em1.pt"
    torch.save({"smirk_encoder.expression_encoder.x": _Payload()}, path)
    with pytest.raises(ModelFileError, match="weights_only=True"):
        smirk_encoder.load_expression_encoder(str(path))
    assert "runs code" not in capsys.readouterr().out


def test_truncated_or_foreign_file_gives_a_clear_error(tmp_path, published_checkpoint):
    truncated = tmp_path / "SMIRK_em1.pt"
    truncated.write_bytes(open(published_checkpoint, "rb").read()[:5000])
    with pytest.raises(ModelFileError, match="Download SMIRK_em1.pt again"):
        smirk_encoder.load_expression_encoder(str(truncated))
    bad_safetensors = tmp_path / "smirk.safetensors"
    bad_safetensors.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        smirk_encoder.load_expression_encoder(str(bad_safetensors))
    with pytest.raises(ModelFileError, match="not found"):
        smirk_encoder.load_expression_encoder(str(tmp_path / "absent.pt"))


def test_safetensors_conversion_gives_identical_outputs(tmp_path, published_checkpoint):
    from safetensors import safe_open

    converted = smirk_encoder.convert_to_safetensors(published_checkpoint, str(tmp_path / "smirk_expression_encoder.safetensors"))
    with safe_open(converted, "pt") as handle:
        assert handle.metadata()["format"] == smirk_encoder.FORMAT
        assert not any(key.startswith("smirk_generator") for key in handle.keys())
    crops = reference_input(3, 1)
    original = smirk_encoder.encode(smirk_encoder.load_expression_encoder(published_checkpoint), crops)
    again = smirk_encoder.encode(smirk_encoder.load_expression_encoder(converted), crops)
    np.testing.assert_array_equal(original, again)


def _smirk_demo_crop(image: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
    """SMIRK demo.py's crop_face + warp, written with scikit-image exactly as the demo does."""
    from skimage.transform import estimate_transform, warp

    left, right = landmarks_px[:, 0].min(), landmarks_px[:, 0].max()
    top, bottom = landmarks_px[:, 1].min(), landmarks_px[:, 1].max()
    old_size = (right - left + bottom - top) / 2
    center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
    size = int(old_size * 1.4)
    src = np.array([[center[0] - size / 2, center[1] - size / 2], [center[0] - size / 2, center[1] + size / 2],
                    [center[0] + size / 2, center[1] - size / 2]])
    dst = np.array([[0, 0], [0, 223], [223, 0]])
    tform = estimate_transform("similarity", src, dst)
    return warp(image, tform.inverse, output_shape=(224, 224), preserve_range=True).astype(np.uint8)


@pytest.mark.parametrize("box", [(170, 60, 290, 200), (-40, 300, 120, 530)], ids=["inside", "over the edge"])
def test_face_crop_matches_smirk_demo(box):
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()
    left, top, right, bottom = box
    angles = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    landmarks = np.stack([(left + right) / 2 + (right - left) / 2 * np.cos(angles),
                          (top + bottom) / 2 + (bottom - top) / 2 * np.sin(angles)], axis=1)

    ours = smirk_encoder.warp_crop(image, smirk_encoder.crop_matrix(landmarks)).permute(1, 2, 0).numpy()
    expected = _smirk_demo_crop(image, landmarks) / 255.0

    difference = np.abs(ours - expected)
    assert difference.max() <= 1 / 255 + 1e-6  # at most one 8-bit level where rounding differs
    assert (difference > 1e-6).mean() < 0.01
