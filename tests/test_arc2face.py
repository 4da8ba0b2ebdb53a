"""Arc2Face's identity prompt and file layout, and the Arc2Face nodes' refusals (no ComfyUI needed)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from genaffect.models.errors import GenAffectInputError, ModelFileError
from genaffect.models.expression.batch import ExpressionBatch
from genaffect.models.generation import arc2face
from genaffect.nodes.arc2face_nodes import GenAffectApplyExpressionAdapter, MissingAdapter

ID = 1014  # "id" in CLIP's vocabulary (ComfyUI's SD1 tokenizer)
START, END = 49406, 49407


def comfy_tokens(ids):
    """Tokens as ComfyUI's SD1 tokenizer returns them: {"l": [[(token, weight), ...]]}."""
    return {"l": [[(t, 1.0) for t in ids]]}


def test_identity_vector_is_the_normalised_arcface_embedding_zero_padded_to_the_token_width():
    embedding = np.random.default_rng(0).normal(size=512).astype(np.float32) * 3
    vector = arc2face.identity_vector(embedding, 768)
    assert vector.shape == (768,) and vector.dtype == torch.float32
    assert torch.allclose(vector[:512], torch.from_numpy(embedding / np.linalg.norm(embedding)))
    assert torch.count_nonzero(vector[512:]) == 0


@pytest.mark.parametrize("embedding, message", [
    (np.zeros(512), "empty or not finite"),
    (np.full(512, np.nan), "empty or not finite"),
    (np.ones(128), "512-d"),
])
def test_unusable_identity_embeddings_are_refused(embedding, message):
    with pytest.raises(GenAffectInputError, match=message):
        arc2face.identity_vector(embedding, 768)


def test_id_token_is_replaced_by_the_identity_and_everything_else_kept():
    vector = torch.ones(768)
    tokens = {"l": [[(START, 1.0), (1125, 1.0), (539, 1.0), (320, 1.0), (ID, 1.0, 7), (2533, 1.2), (END, 1.0)]]}
    placed = arc2face.place_identity(tokens, ID, vector)
    row = placed["l"][0]
    assert row[4][0] is vector and row[4][1:] == (1.0, 7)
    assert [entry for i, entry in enumerate(row) if i != 4] == [e for i, e in enumerate(tokens["l"][0]) if i != 4]
    assert tokens["l"][0][4][0] == ID  # the input is not changed


def test_prompt_without_the_id_word_is_refused():
    with pytest.raises(GenAffectInputError, match="'id'"):
        arc2face.place_identity(comfy_tokens([START, 1125, END]), ID, torch.ones(768))


# --- files -------------------------------------------------------------------------------------------

def write(path, size=16):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def install(root, *, adapter=True, encoder="encoder/pytorch_model.bin"):
    write(os.path.join(root, "arc2face", "diffusion_pytorch_model.safetensors"), 3_440_000_000)
    write(os.path.join(root, encoder), 492_000_000)
    if adapter:
        write(os.path.join(root, "exp_adapter", "exp_adapter.bin"), 78_100_000)


def test_published_layout_is_found(tmp_path):
    root = str(tmp_path / "arc2face")
    install(root)
    files = arc2face.locate_files([root], [str(tmp_path)])
    assert files.unet.endswith(os.path.join("arc2face", "diffusion_pytorch_model.safetensors"))
    assert files.encoder.endswith(os.path.join("encoder", "pytorch_model.bin"))
    assert files.expression_adapter.endswith("exp_adapter.bin") and files.reference_lora is None
    assert "huggingface.co/FoivosPar/Arc2Face" in files.missing[arc2face.REFERENCE_LORA]


def test_safetensors_conversions_are_preferred_and_stand_in_for_the_pickles(tmp_path):
    root = str(tmp_path / "arc2face")
    install(root, adapter=False, encoder="encoder/model.safetensors")
    write(os.path.join(root, "exp_adapter", "exp_adapter.safetensors"))
    files = arc2face.locate_files([root], [str(tmp_path)])
    assert files.encoder.endswith("model.safetensors") and files.expression_adapter.endswith("exp_adapter.safetensors")


def test_missing_unet_names_the_file_its_address_and_folder(tmp_path):
    root = str(tmp_path / "arc2face")
    write(os.path.join(root, "encoder", "pytorch_model.bin"), 492_000_000)
    with pytest.raises(ModelFileError) as caught:
        arc2face.locate_files([root], [str(tmp_path)])
    message = str(caught.value)
    assert "arc2face/diffusion_pytorch_model.safetensors" in message
    assert "huggingface.co/FoivosPar/Arc2Face" in message
    assert os.path.join(root, "arc2face", "diffusion_pytorch_model.safetensors") in message
    assert "pytorch_model.bin" not in message.split("Keep the published")[0].split("MISSING")[-1]


def test_files_downloaded_one_folder_too_high_are_reported_as_misplaced(tmp_path):
    models = tmp_path / "models"
    install(str(models))  # hf_hub_download(local_dir="ComfyUI/models") puts arc2face/ beside checkpoints/
    with pytest.raises(ModelFileError, match="(?s)MISPLACED.*move it to"):
        arc2face.locate_files([str(models / "arc2face")], [str(models)])


def test_truncated_download_is_reported_as_broken(tmp_path):
    root = str(tmp_path / "arc2face")
    install(root)
    write(os.path.join(root, "arc2face", "diffusion_pytorch_model.safetensors"), 1000)
    with pytest.raises(ModelFileError, match="(?s)BROKEN.*incomplete download"):
        arc2face.locate_files([root], [str(tmp_path)])


# --- node refusals -----------------------------------------------------------------------------------

def apply(adapter, expression):
    return GenAffectApplyExpressionAdapter().apply(None, adapter, expression, 1.0, 0.0, 1.0)


def test_expression_without_flame_is_refused_with_the_nodes_that_make_it():
    blendshapes_only = ExpressionBatch(labels=["smile"], blendshapes=np.zeros((1, 52), np.float32))
    from genaffect.models.generation.expression_adapter import ExpressionAdapter, LinearProjection

    adapter = ExpressionAdapter(LinearProjection(55, 32, 4), [], 32)
    with pytest.raises(GenAffectInputError, match="needs flame.*SMIRK"):
        apply(adapter, blendshapes_only)


def test_missing_adapter_file_surfaces_when_the_adapter_is_used():
    expression = ExpressionBatch(labels=["x"], flame=np.zeros((1, 55), np.float32))
    with pytest.raises(GenAffectInputError, match="(?s)not installed.*exp_adapter"):
        apply(MissingAdapter("the Expression Adapter is not installed:\n  MISSING arc2face/exp_adapter/exp_adapter.bin"),
              expression)
    with pytest.raises(GenAffectInputError, match="not Arc2Face's Expression Adapter"):
        apply(object(), expression)
