"""What ComfyUI checks before a run: each loader's VALIDATE_INPUTS says which of its files are missing, with where to
get them and where they go, so ComfyUI lists every missing file of a workflow at once (before, each surfaced on a
later run: Arc2Face's UNet, its encoder, arcface.onnx, antelopev2, the landmarker). And the templates' example
photo is put where their Load Image nodes look."""

from __future__ import annotations

import os
import types

import pytest
from genaffect import NODE_CLASS_MAPPINGS
from genaffect.models.files.packaged_data import EXAMPLE_PHOTO, data_path
from genaffect.nodes import comfy_host

FACE = NODE_CLASS_MAPPINGS["GenAffectFaceAnalyzerLoader"]
ESTIMATOR = NODE_CLASS_MAPPINGS["GenAffectExpressionEstimatorLoader"]
ARC2FACE = NODE_CLASS_MAPPINGS["GenAffectArc2FaceLoader"]
DIT = NODE_CLASS_MAPPINGS["GenAffectDiTAdapterLoader"]


def test_with_no_model_files_every_loader_names_all_its_missing_files_with_their_source(models_dir):
    answers = {
        "face": FACE.VALIDATE_INPUTS(pack="antelopev2", recognition="arcface.onnx (Arc2Face)"),
        "estimator": ESTIMATOR.VALIDATE_INPUTS(landmarker="face_landmarker.task", smirk="SMIRK_em1.pt"),
        "arc2face": ARC2FACE.VALIDATE_INPUTS(weight_dtype="default"),
        "dit": DIT.VALIDATE_INPUTS(adapter_name="my_adapter.safetensors"),
    }
    expected = {
        "face": ["'antelopev2' was not found", "drive.google.com", "arcface.onnx was not found",
                 "huggingface.co/FoivosPar/Arc2Face/blob/main/arcface.onnx", str(models_dir / "arc2face")],
        "estimator": ["face_landmarker.task is not in models/mediapipe/",
                      "storage.googleapis.com/mediapipe-models/face_landmarker", "SMIRK_em1.pt is not in models/smirk/",
                      "drive.google.com/file/d/1T65uEd9dVLHgVw5KiUYL66NUee-MCzoE"],
        "arc2face": ["MISSING", "arc2face/diffusion_pytorch_model.safetensors", "encoder/pytorch_model.bin",
                     "huggingface.co/FoivosPar/Arc2Face"],
        "dit": ["my_adapter.safetensors is not in models/genaffect/", "training/"],
    }
    for loader, words in expected.items():
        assert isinstance(answers[loader], str), loader
        for word in words:
            assert word in answers[loader], (loader, word, answers[loader])


def test_with_the_files_in_place_validation_passes(tiny_pack, expression_models):
    assert FACE.VALIDATE_INPUTS(pack="antelopev2", recognition="pack default") is True
    assert ESTIMATOR.VALIDATE_INPUTS(landmarker="face_landmarker.task", smirk="SMIRK_em1.pt") is True
    assert "arcface.onnx" in FACE.VALIDATE_INPUTS(pack="antelopev2", recognition="arcface.onnx (Arc2Face)")


def test_a_choice_that_is_not_offered_is_refused_since_validate_inputs_replaces_comfyuis_list_check(models_dir):
    """Naming an input in VALIDATE_INPUTS turns off ComfyUI's own check of it: the node checks the choice itself."""
    assert "recognition 'magic'" in FACE.VALIDATE_INPUTS(pack="antelopev2", recognition="magic")
    assert "weight_dtype 'fp8'" in ARC2FACE.VALIDATE_INPUTS(weight_dtype="fp8")
    assert "../../etc/passwd is not in models/genaffect/" in DIT.VALIDATE_INPUTS(adapter_name="../../etc/passwd")


@pytest.fixture
def comfy_input(tmp_path, monkeypatch):
    folder = tmp_path / "input"
    fake = types.SimpleNamespace(get_input_directory=lambda: str(folder))
    monkeypatch.setattr(comfy_host, "_folder_paths", lambda: fake)
    return folder


def test_the_example_photo_is_put_in_comfyuis_input_folder_once_and_never_over_a_file(comfy_input):
    comfy_host.provide_example_photo()
    placed = comfy_input / EXAMPLE_PHOTO
    with open(data_path(EXAMPLE_PHOTO), "rb") as handle:
        assert placed.read_bytes() == handle.read()
    placed.write_bytes(b"the user's own file of that name")
    comfy_host.provide_example_photo()
    assert placed.read_bytes() == b"the user's own file of that name"


def test_a_read_only_input_folder_costs_only_the_photo(comfy_input, caplog):
    comfy_input.mkdir()
    os.chmod(comfy_input, 0o500)
    try:
        with caplog.at_level("WARNING"):
            comfy_host.provide_example_photo()  # no exception: the pack still loads
        if os.geteuid() != 0:  # root writes anyway
            assert "could not put the templates' example photo" in caplog.text
    finally:
        os.chmod(comfy_input, 0o700)


def test_the_example_photo_is_the_public_domain_astronaut():
    import numpy as np
    from PIL import Image
    from skimage import data

    photo = np.asarray(Image.open(data_path(EXAMPLE_PHOTO)).convert("RGB")).astype(int)
    assert photo.shape == (512, 512, 3) and np.abs(photo - data.astronaut()).mean() < 3  # JPEG of skimage's astronaut
