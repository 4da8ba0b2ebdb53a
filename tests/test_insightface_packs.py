"""Finding insightface packs, and the messages for every way a pack can be missing or misplaced."""

import os
import socket

import pytest
from genaffect.models.errors import ModelFileError
from genaffect.models.files.insightface_packs import diagnose_pack, find_packs, locate_pack, pack_choices
from tiny_insightface import write_pack


def test_usable_pack_is_found_and_listed_first(models_dir):
    root = str(models_dir / "insightface")
    write_pack(root, "buffalo_l")
    write_pack(root, "antelopev2")
    assert set(find_packs([root])) == {"antelopev2", "buffalo_l"}
    assert pack_choices([root]) == ["antelopev2", "buffalo_l"]
    assert locate_pack("antelopev2", [root]) == os.path.join(root, "models", "antelopev2")


def test_default_pack_is_listed_even_when_absent_so_a_graph_stays_valid(models_dir):
    assert pack_choices([str(models_dir / "insightface")]) == ["antelopev2"]


def test_missing_pack_names_url_and_target_folder(models_dir):
    root = str(models_dir / "insightface")
    with pytest.raises(ModelFileError) as raised:
        locate_pack("antelopev2", [root])
    message = str(raised.value)
    assert "drive.google.com" in message
    assert os.path.join(root, "models", "antelopev2") in message


def test_nested_unzip_is_explained_with_the_exact_move(models_dir):
    root = str(models_dir / "insightface")
    write_pack(os.path.join(root, "models", "antelopev2"), "antelopev2")  # .../antelopev2/models/antelopev2
    nested_root = os.path.join(root, "models", "antelopev2")
    os.rename(os.path.join(nested_root, "models", "antelopev2"), os.path.join(nested_root, "antelopev2"))
    os.rmdir(os.path.join(nested_root, "models"))
    assert "antelopev2" in pack_choices([root])
    problem = diagnose_pack("antelopev2", [root])
    assert "one level too deep" in problem.message
    assert os.path.join(nested_root, "antelopev2") in problem.message
    assert f"Move them up into {nested_root}" in problem.message


def test_pack_outside_the_models_subfolder_is_explained(models_dir):
    root = str(models_dir / "insightface")
    write_pack(root, "antelopev2")
    os.rename(os.path.join(root, "models", "antelopev2"), os.path.join(root, "antelopev2"))
    message = diagnose_pack("antelopev2", [root]).message
    assert "insightface looks in" in message and f"into {os.path.join(root, 'models')}" in message


def test_zipped_and_empty_packs_are_explained(models_dir):
    root = models_dir / "insightface" / "models"
    (root / "antelopev2").mkdir(parents=True)
    (root / "antelopev2" / "readme.txt").write_text("x")
    assert "holds no .onnx files" in diagnose_pack("antelopev2", [str(root.parent)]).message
    (root / "antelopev2.zip").write_bytes(b"PK")
    assert "still zipped" in diagnose_pack("antelopev2", [str(root.parent)]).message


def test_loader_node_never_tries_to_download(models_dir, monkeypatch):
    from genaffect.nodes.face_nodes import GenAffectFaceAnalyzerLoader

    def no_network(*args, **kwargs):
        raise AssertionError("the loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelFileError, match="was not found"):
        GenAffectFaceAnalyzerLoader().load("antelopev2", "pack default", "CPU", 640, 0.5)


@pytest.mark.parametrize("name", ["../../secrets", "..", "a/b", ""])
def test_a_pack_name_that_is_a_path_is_refused_without_looking_outside_the_model_folders(models_dir, tmp_path, name):
    outside = tmp_path / "secrets"
    outside.mkdir()
    (outside / "private_notes.txt").write_text("not yours")
    root = str(models_dir / "insightface")
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    problem = diagnose_pack(name, [root])
    assert problem is not None and "is not a pack name" in problem.message
    assert "private_notes" not in problem.message
