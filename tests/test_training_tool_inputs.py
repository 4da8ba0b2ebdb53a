"""The training tools on bad input: the dataset builder and the calibration go on past a photo they cannot read (a
decompression bomb, a truncated JPEG, an empty or non-image file, a caption that is not UTF-8) and name it; shards
are checked when the trainer opens them (a NaN or a mis-shaped tensor is refused, naming the shard and tensor);
no tool overwrites a file or data set it was not told to replace."""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib

import numpy as np
import pytest
import torch
from genaffect.models.errors import GenAffectInputError, run_command
from genaffect.models.expression.expression_estimator import ExpressionEstimator
from genaffect.training.dataset import SHARD_FORMAT, ShardDataset, build_dataset, check_shard
from PIL import Image
from safetensors.torch import save_file
from tiny_insightface import faces_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bad_files(folder) -> dict[str, str]:
    """One file of each kind a folder of photos can hold by mistake; {name: what it is}."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((256, 256, 3), 120, np.uint8)).save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)  # 3.6 billion pixels claimed
    (folder / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                                      + chunk(b"IEND", b""))
    return {"truncated.jpg": "truncated", "empty.png": "empty", "notes.png": "text", "bomb.png": "bomb"}


def test_the_dataset_builder_goes_on_past_unreadable_photos_and_captions_and_names_each(tmp_path, analyzer):
    from mediapipe_results import MarkerLandmarker

    photos = tmp_path / "photos"
    for person, identity in (("ann", 1), ("bob", 2)):
        (photos / person).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(faces_image(dict(cx=128 + 8 * i, cy=128, half=40, identity=identity))).save(
                photos / person / f"{i}.png")
    bad = bad_files(photos / "bob")
    (photos / "ann" / "0.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))  # a caption saved as Latin-1
    summary = build_dataset(str(photos), str(tmp_path / "data"), analyzer,
                            ExpressionEstimator(MarkerLandmarker(), "stand-in"),
                            lambda pixels: torch.nn.functional.avg_pool2d(pixels, 8)[:, :3],
                            lambda captions: {"prompt_embeds": torch.zeros(len(captions), 4, 8)}, size=64,
                            shard_size=8, family="flux")
    skipped = "\n".join(summary["skipped"])
    for name in bad:
        assert f"{name} is not a readable image" in skipped, name
    assert "its caption" in skipped and "0.txt is not readable UTF-8 text" in skipped
    assert summary["faces"] == 3  # ann/1, bob/0, bob/1: ann/0 is left out with its unreadable caption
    assert len(ShardDataset(str(tmp_path / "data"))) == 3


def test_the_dataset_builder_replaces_an_existing_data_set_only_when_told(tmp_path, analyzer):
    from mediapipe_results import MarkerLandmarker

    photos = tmp_path / "photos" / "ann"
    photos.mkdir(parents=True)
    Image.fromarray(faces_image(dict(cx=128, cy=128, half=40, identity=1))).save(photos / "0.png")
    output = tmp_path / "data"
    output.mkdir()
    (output / "shard-00007.safetensors").write_bytes(b"an older data set")

    def build(**options):
        return build_dataset(str(tmp_path / "photos"), str(output), analyzer,
                             ExpressionEstimator(MarkerLandmarker(), "stand-in"),
                             lambda pixels: torch.nn.functional.avg_pool2d(pixels, 8)[:, :3],
                             lambda captions: {"prompt_embeds": torch.zeros(len(captions), 4, 8)}, size=64, **options)

    with pytest.raises(GenAffectInputError, match="already holds a data set .*pass --overwrite to replace it"):
        build()
    assert (output / "shard-00007.safetensors").read_bytes() == b"an older data set"
    build(overwrite=True)
    assert sorted(os.listdir(output)) == ["dataset.json", "shard-00000.safetensors"]  # nothing left over to mix in


def test_the_calibration_goes_on_past_unreadable_photos_and_lists_them(tmp_path):
    pytest.importorskip("mediapipe.tasks.python.vision", reason="the landmarker stand-in uses mediapipe's classes")
    import calibrate_expressions
    from mediapipe_results import MarkerLandmarker

    photos = tmp_path / "photos"
    for expression in ("happy", "neutral"):
        for person in ("ann", "bob", "cy"):
            (photos / expression / person).mkdir(parents=True)
            Image.fromarray(faces_image(dict(cx=128, cy=128, half=60, identity=1))).save(
                photos / expression / person / "face.png")
    bad = bad_files(photos / "happy" / "ann")
    smile, calm = np.full(52, 0.02, np.float32), np.full(52, 0.02, np.float32)
    smile[44:46] = 0.7  # mouthSmileLeft/Right
    estimator = ExpressionEstimator(MarkerLandmarker(scores=[smile] * 3 + [calm] * 3), "face_landmarker.task")
    data = calibrate_expressions.main(["--photos", str(photos), "--output", str(tmp_path / "targets.json"),
                                       "--min-people-per-preset", "3", "--min-people", "1", "--min-face", "10"],
                                      estimator=estimator)
    assert sorted(os.path.basename(p) for p in data["photos"]["unreadable"]) == sorted(bad)
    assert data["photos"]["skipped"] == {"unreadable image file": len(bad)} and data["photos"]["photos_used"] == 6


def _shard(folder, **changes):
    g = torch.Generator().manual_seed(0)
    state = {"latents": torch.randn(6, 4, 8, 8, generator=g),
             "identity": torch.nn.functional.normalize(torch.randn(6, 512, generator=g), dim=-1),
             "person": torch.tensor([0, 0, 0, 1, 1, 1]), "caption": torch.zeros(6, dtype=torch.int64),
             "prompt_embeds": torch.randn(1, 4, 8, generator=g), "blendshapes": torch.rand(6, 52, generator=g)}
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value(state[key]) if callable(value) else value
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "shard-00000.safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, path, metadata={
        "format": SHARD_FORMAT, "origins": "[]", "captions": '["a face"]', "family": "flux"})
    return path


def _with(value, index=1):
    def change(tensor):
        tensor = tensor.clone()
        tensor.view(-1)[index] = value
        return tensor
    return change


@pytest.mark.parametrize("changes, message", [
    ({"latents": _with(float("nan"))}, "latents holds NaN or infinite values"),
    ({"identity": _with(float("inf"))}, "identity holds NaN or infinite values"),
    ({"prompt_embeds": _with(float("nan"))}, "prompt_embeds holds NaN or infinite values"),
    ({"blendshapes": _with(7.0)}, "blendshapes run outside 0..1"),
    ({"identity": torch.randn(6, 128)}, r"identity has shape \[6, 128\]"),
    ({"identity": torch.randn(5, 512)}, r"identity has shape \[5, 512\]"),
    ({"person": torch.tensor([0, 0, 1, 1])}, r"person has shape \[4\]"),
    ({"person": torch.zeros(6)}, "person is stored as torch.float32, not integers"),
    ({"caption": torch.full((6,), 5, dtype=torch.int64)}, "caption numbers run to 5 but it holds 1 captions"),
    ({"latents": torch.randn(6, 10)}, r"latents has shape \[6, 10\]"),
    ({"latents": torch.zeros(6, 4, 8, 8, dtype=torch.int8)}, "latents is stored as torch.int8"),
    ({"identity": None}, "it has no identity"),
    ({"prompt_embeds": None}, "it has no prompt_embeds"),
    ({"blendshapes": None}, "it holds no expressions"),
])
def test_a_shard_with_a_nan_or_a_misshaped_tensor_is_refused_naming_it(tmp_path, changes, message):
    _shard(tmp_path / "data", **changes)
    with pytest.raises(GenAffectInputError, match=f"shard-00000.safetensors: {message}.*rebuild the data set"):
        ShardDataset(str(tmp_path / "data"))
    assert check_shard(_shard(tmp_path / "good")) == 6


@pytest.mark.parametrize("content", [b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"", os.urandom(1000)])
def test_a_shard_that_is_not_a_safetensors_file_is_refused_naming_it(tmp_path, content):
    (tmp_path / "shard-00000.safetensors").write_bytes(content)
    with pytest.raises(GenAffectInputError, match="shard-00000.safetensors: not a readable safetensors file"):
        ShardDataset(str(tmp_path))


def _adapter(path):
    pytest.importorskip("diffusers")
    from genaffect.models.generation.dit_adapter import DiTAdapter
    from genaffect.training.diffusers_host import adapter_config_for
    from tiny_dit import tiny_flux

    DiTAdapter(adapter_config_for(tiny_flux(), token_width=32, identity_tokens=4, expression_tokens=3, heads=2,
                                  head_dim=8, resampler_depth=1)).save(str(path))
    return str(path)


def test_export_never_overwrites_a_file_unless_told_and_says_so_without_a_traceback(tmp_path, capsys):
    from genaffect.training.trainer import export_adapter

    source = _adapter(tmp_path / "run" / "genaffect_adapter.safetensors")
    target = tmp_path / "models" / "genaffect" / "mine.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone's other adapter")
    sys.path.insert(0, os.path.join(REPO, "training"))
    import train  # the command's own entry, run as `python training/train.py export ...` runs it

    assert run_command(train.main, ["export", "--source", source, "--to", str(target)]) == 2  # a message, no traceback
    assert "already exists; choose another name, or pass --overwrite to replace it" in capsys.readouterr().err
    assert target.read_bytes() == b"someone's other adapter"
    from genaffect.models.generation.dit_adapter import load_dit_adapter

    export_adapter(source, str(target), overwrite=True)
    assert load_dit_adapter(str(target)).config.hidden_size == 32  # replaced, as asked
    with pytest.raises(GenAffectInputError, match="is a folder; give the file to write"):
        export_adapter(source, str(tmp_path))
    with pytest.raises(GenAffectInputError, match="does not exist; give a training output folder"):
        export_adapter(str(tmp_path / "nothing"), str(tmp_path / "new.safetensors"))


@pytest.mark.parametrize("command", ["build_dataset", "forge_dataset"])
def test_the_data_set_commands_name_a_missing_pack_folder_without_a_traceback(command, tmp_path, capsys):
    import importlib

    sys.path.insert(0, os.path.join(REPO, "training"))
    main = importlib.import_module(command).main  # the command's own entry, as `python training/<command>.py` runs it
    given = ["--photos" if command == "build_dataset" else "--results", str(tmp_path), "--model", str(tmp_path),
             "--output", str(tmp_path / "out"), "--insightface", str(tmp_path / "antelopev2"),
             "--landmarker", str(tmp_path / "face_landmarker.task"), "--device", "cpu"]
    assert run_command(main, given) == 2
    assert f"the pack folder {tmp_path / 'antelopev2'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
