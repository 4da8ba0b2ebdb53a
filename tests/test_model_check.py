"""The model catalog and the model check: found, missing, misplaced and broken files, node and CLI."""

import os
import subprocess
import sys

import pytest

from genaffect.models.doctor import main as doctor_main
from genaffect.models.doctor import roots_for_models_dir
from genaffect.models.files.model_catalog import CATALOG, MODEL_FOLDERS
from genaffect.models.files.model_check import BROKEN, FOUND, MISPLACED, MISSING, check_models
from genaffect.nodes.model_check_node import GenAffectCheckModels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def status_of(statuses, path):
    return next(s for s in statuses if s.entry.path == path)


def write(path, size=16):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


def test_catalog_entries_are_unique_and_live_in_registered_folders():
    keys = [(e.folder, e.path) for e in CATALOG]
    assert len(keys) == len(set(keys))
    for entry in CATALOG:
        assert entry.folder in MODEL_FOLDERS or entry.folder == "vae"
        assert entry.url.startswith("https://") and entry.licence


def test_found_missing_misplaced_and_broken_files(models_dir):
    md = str(models_dir)
    write(os.path.join(md, "mediapipe", "face_landmarker.task"), 3_700_000)
    write(os.path.join(md, "insightface", "models", "antelopev2", "antelopev2", "scrfd_10g_bnkps.onnx"))  # nested
    write(os.path.join(md, "arc2face", "arcface.onnx"), 1000)  # far below 261 MB: truncated
    statuses = check_models(roots_for_models_dir(md), [md])
    assert status_of(statuses, "face_landmarker.task").state == FOUND
    nested = status_of(statuses, "models/antelopev2/scrfd_10g_bnkps.onnx")
    assert nested.state == MISPLACED
    assert "antelopev2/antelopev2/scrfd_10g_bnkps.onnx" in nested.detail.replace(os.sep, "/")
    assert nested.path == os.path.join(md, "insightface", "models", "antelopev2", "scrfd_10g_bnkps.onnx")
    assert status_of(statuses, "arcface.onnx").state == BROKEN
    assert status_of(statuses, "SMIRK_em1.pt").state == MISSING


def test_generic_file_names_are_matched_with_their_folder(models_dir):
    md = str(models_dir)
    write(os.path.join(md, "checkpoints", "something", "config.json"))  # another model's config
    write(os.path.join(md, "diffusers", "encoder", "config.json"))  # our encoder config, misplaced
    statuses = check_models(roots_for_models_dir(md), [md])
    assert status_of(statuses, "arc2face/config.json").state == MISSING
    assert status_of(statuses, "encoder/config.json").state == MISPLACED


def test_arcface_in_the_antelopev2_folder_is_accepted(models_dir):
    md = str(models_dir)
    write(os.path.join(md, "insightface", "models", "antelopev2", "arcface.onnx"), 261_000_000)
    assert status_of(check_models(roots_for_models_dir(md), [md]), "arcface.onnx").state == FOUND


def test_check_models_node_reports_every_file_with_url_and_target(models_dir):
    result = GenAffectCheckModels().check(False)
    report = result["result"][0]
    assert result["ui"]["text"] == [report]
    for entry in CATALOG:
        assert f"{entry.folder}/{entry.path}" in report
    assert f"put it at: {os.path.join(str(models_dir), 'mediapipe', 'face_landmarker.task')}" in report
    assert "onnxruntime:" in report and "CPUExecutionProvider" in report
    only = GenAffectCheckModels().check(True)["result"][0]
    assert "FOUND" not in only


def test_doctor_command_prints_the_report_and_fails_while_files_are_missing(models_dir, capsys):
    assert doctor_main(["--models-dir", str(models_dir)]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "face_landmarker.task" in out
    assert doctor_main(["--models-dir", str(models_dir / "nope")]) == 2


def test_doctor_runs_as_documented_from_the_pack_folder(models_dir):
    md = str(models_dir)
    for entry in CATALOG:  # every file present and of plausible size
        write(os.path.join(md, entry.folder, entry.path), int((entry.size_mb or 0) * 1e6) + 1)
    run = subprocess.run(
        [sys.executable, "-m", "models.doctor", "--models-dir", md], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{len(CATALOG)} found, 0 missing" in run.stdout


def test_doctor_finds_comfyuis_models_from_a_pack_folder_that_is_a_symbolic_link(tmp_path):
    """ComfyUI/custom_nodes/genaffect -> a checkout elsewhere: ``../../models`` typed there (README, Models) names
    ComfyUI/models, as ``cd ../..`` would, not a folder two levels above the checkout."""
    comfyui = tmp_path / "ComfyUI"
    (comfyui / "custom_nodes").mkdir(parents=True)
    write(str(comfyui / "models" / "mediapipe" / "face_landmarker.task"), 3_700_000)
    pack = comfyui / "custom_nodes" / "genaffect"
    try:
        os.symlink(REPO, pack, target_is_directory=True)
    except (OSError, NotImplementedError) as error:  # Windows without the right to make links
        pytest.skip(f"cannot make a symbolic link here: {error}")
    # what a shell does after `cd ComfyUI/custom_nodes/genaffect`: the physical folder as the working directory,
    # the path it was reached by in $PWD
    env = {**os.environ, "PWD": str(pack)}
    run = subprocess.run([sys.executable, "-m", "models.doctor", "--models-dir", "../../models"], cwd=str(pack),
                         env=env, capture_output=True, text=True)
    assert run.returncode in (0, 1), run.stdout + run.stderr  # 1: files missing; 2 would be "not a folder"
    assert f"GenAffect model check for {comfyui / 'models'}\n" in run.stdout
    assert f"at {comfyui / 'models' / 'mediapipe' / 'face_landmarker.task'}\n" in run.stdout  # found there


def test_a_relative_models_dir_without_a_shell_pwd_is_read_from_the_working_directory(tmp_path, monkeypatch):
    from genaffect.models.doctor import resolve_models_dir

    monkeypatch.chdir(tmp_path)
    here = os.getcwd()
    monkeypatch.setenv("PWD", str(tmp_path.parent))  # a $PWD left over from another folder is not used
    assert resolve_models_dir("models") == os.path.join(here, "models")
    monkeypatch.delenv("PWD")
    assert resolve_models_dir("models") == os.path.join(here, "models")
    assert resolve_models_dir(str(tmp_path / "x" / ".." / "models")) == str(tmp_path / "models")


def test_routes_are_judged_separately_and_any_insightface_pack_serves_face_analysis(models_dir, capsys):
    from tiny_insightface import write_pack

    write_pack(str(models_dir / "insightface"), "buffalo_sc")  # not the catalog's antelopev2
    write(str(models_dir / "mediapipe" / "face_landmarker.task"), 4_000_000)
    assert doctor_main(["--models-dir", str(models_dir)]) == 0  # default: face, expression — both ready
    out = capsys.readouterr().out
    assert "face analysis          READY: pack buffalo_sc" in out
    assert "Arc2Face               NOT READY: arc2face/arc2face/diffusion_pytorch_model.safetensors missing" in out
    assert "DiT adapter            NOT READY: no adapter in genaffect/" in out
    assert doctor_main(["--models-dir", str(models_dir), "--routes", "face,arc2face"]) == 1  # asked for Arc2Face
    assert doctor_main(["--models-dir", str(models_dir), "--routes", "face,teleport"]) == 2
    write(str(models_dir / "genaffect" / "mine.safetensors"), 10)
    assert doctor_main(["--models-dir", str(models_dir), "--routes", "dit"]) == 0
