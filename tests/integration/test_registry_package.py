"""The Comfy Registry package, as comfy-cli builds it (its own zip_files, which honours .comfyignore): the pack,
its workflows, subgraph blueprints and help pages ship, the development, calibration and training tools do not."""

from __future__ import annotations

import os
import zipfile

import pytest

from comfy_server import REPO


def test_registry_package_ships_the_pack_and_leaves_out_training_tests_and_benchmarks(tmp_path, monkeypatch):
    file_utils = pytest.importorskip("comfy_cli.file_utils", reason="pip install comfy-cli (the Registry's packager)")
    monkeypatch.chdir(REPO)  # comfy-cli packages the current folder's git-tracked files
    archive = tmp_path / "node.zip"
    file_utils.zip_files(str(archive))
    with zipfile.ZipFile(archive) as package:
        names = package.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {"__init__.py", "nodes", "models", "js", "workflows", "subgraphs", "requirements.txt", "README.md",
            "LICENSE", "pyproject.toml"} <= tops, sorted(tops)
    assert not tops & {"training", "tools", "tests", "benchmarks", ".ci", ".github", "pytest.ini"}, sorted(tops)
    assert os.path.join("models", "data", "expressions.json").replace(os.sep, "/") in names
    assert "js/docs/GenAffectAlignFace/en.md" in names and "js/docs/GenAffectAlignFace.md" in names  # help pages
    assert "subgraphs/GenAffect Score a Generated Set.json" in names  # blueprints
