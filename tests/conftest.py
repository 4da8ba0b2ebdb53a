"""Test setup: import the pack under one fixed name, whatever its folder is called, and give tests
a temporary ComfyUI-style models folder with tiny insightface models in it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The tests' models are tiny: with more than one thread per process, torch's thread synchronisation costs more than
# the work (a training test: 5x the CPU time on a busy 2-core machine). Set before torch loads, and inherited by
# the subprocesses tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_NAME = "genaffect"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # test modules that share helpers
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))  # tiny models, test doubles
sys.path.insert(0, os.path.join(REPO, "tools"))  # pack_loader, calibrate_expressions
from pack_loader import import_pack  # noqa: E402  (ComfyUI imports a pack the same way: the folder is a package)

import_pack(PACK_NAME)

import tiny_insightface  # noqa: E402


class _RepositoryFolderIsNotATestPackage:
    """pytest would collect the repository folder (it has ComfyUI's __init__.py) as a package and import that
    file under the folder's name, which fails when the name is not a Python identifier (a clone in
    `genaffect-main`) and otherwise imports the whole pack a second time. The pack is imported above under one
    name; the folder is collected as a plain directory. Registered as a plugin because the repository folder
    is collected before any conftest inside it applies."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if Path(path) == Path(REPO):
            return pytest.Dir.from_parent(parent, path=Path(path))
        return None


def pytest_configure(config):
    config.pluginmanager.register(_RepositoryFolderIsNotATestPackage(), "genaffect-repository-folder")


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty ComfyUI-style models folder that the node layer reads (via GENAFFECT_MODELS_DIR)."""
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("GENAFFECT_MODELS_DIR", str(root))
    return root


@pytest.fixture
def tiny_pack(models_dir):
    """A tiny antelopev2-layout pack in models/insightface/models/antelopev2/; returns its folder."""
    return tiny_insightface.write_pack(str(models_dir / "insightface"))


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    from genaffect.models.face import face_analyzer

    face_analyzer.release_models()
    yield
    face_analyzer.release_models()


@pytest.fixture
def analyzer(tiny_pack):
    from genaffect.models.face import face_analyzer
    from genaffect.models.files import onnx_providers

    return face_analyzer.load_face_analyzer(
        "antelopev2", tiny_pack, onnx_providers.choose_providers("CPU"), det_size=256
    )


@pytest.fixture
def expression_models(models_dir, monkeypatch):
    """models/mediapipe/face_landmarker.task and models/smirk/SMIRK_em1.pt for the estimator nodes.

    SMIRK_em1.pt holds random weights in the published layout and loads for real. The .task file
    cannot exist in tests (it is a user download), so MediaPipe's model is replaced by the
    MarkerLandmarker double, which finds the faces tiny_insightface paints.
    """
    import torch
    from genaffect.models.expression import expression_estimator
    from mediapipe_results import MarkerLandmarker
    from smirk_weights import published_layout_weights

    (models_dir / "mediapipe").mkdir()
    (models_dir / "mediapipe" / "face_landmarker.task").write_bytes(b"stands in for the MediaPipe bundle")
    (models_dir / "smirk").mkdir()
    torch.save(published_layout_weights(0), models_dir / "smirk" / "SMIRK_em1.pt")
    landmarkers = []

    def create(path, max_faces=4, min_confidence=0.5):
        assert os.path.isfile(path)
        landmarkers.append(MarkerLandmarker())
        return landmarkers[-1]

    monkeypatch.setattr(expression_estimator, "create_face_landmarker", create)
    return models_dir
