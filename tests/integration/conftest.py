"""One real ComfyUI server for the integration tests (see test_comfyui.py for what is needed).

ComfyUI starts on loopback with --cpu, the pack linked in through an extra_model_paths file, tiny
insightface models written by the test and, for the sampling tests, tiny diffusion models built by
tiny_diffusion_models.py with ComfyUI's own classes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error

import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # comfy_server, tiny_diffusion_models

from comfy_server import (
    COMFYUI_DIR,
    COMFYUI_PYTHON,
    HAS_REAL_LANDMARKER,
    LANE_PACK,
    MODEL_FOLDERS,
    REAL_LANDMARKER,
    REPO,
    Comfy,
    free_port,
)
from tiny_insightface import faces_image, write_pack


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    if not COMFYUI_DIR:
        pytest.skip("set COMFYUI_DIR to a ComfyUI checkout to run the integration tests (see CONTRIBUTING.md)")
    work = tmp_path_factory.mktemp("comfyui")
    (work / "custom_nodes").mkdir()
    os.symlink(REPO, work / "custom_nodes" / LANE_PACK, target_is_directory=True)
    # a copy "installed" the usual way beside it, as on a machine that has the pack: it must not load
    os.symlink(REPO, work / "custom_nodes" / "genaffect", target_is_directory=True)
    os.symlink(os.path.join(os.path.dirname(os.path.abspath(__file__)), "stand_in_text_encoder"),
               work / "custom_nodes" / "stand_in_text_encoder", target_is_directory=True)
    models = work / "models"
    write_pack(str(models / "insightface"))
    for name in ("input", "output", "temp", "user"):
        (work / name).mkdir()
    reference = faces_image(dict(cx=128, cy=128, half=40, identity=1), dict(cx=200, cy=48, half=16, identity=2))
    Image.fromarray(reference).save(work / "input" / "example.png")
    # A real face for MediaPipe beside a face the tiny insightface detector finds.
    from skimage import data

    both = data.astronaut().copy()
    both[288:, 384:] = faces_image(dict(cx=64, cy=112, half=40, identity=1), height=224, width=128)
    Image.fromarray(both).save(work / "input" / "astronaut.png")
    if HAS_REAL_LANDMARKER:
        (models / "mediapipe").mkdir(parents=True)
        shutil.copy(REAL_LANDMARKER, models / "mediapipe" / "face_landmarker.task")
    # The user's own insightface folder comes from this file; ours must be added after it, not replace it.
    folders = "".join(f"  {name}: {name}\n" for name in MODEL_FOLDERS)
    (work / "extra_model_paths.yaml").write_text(
        f"test:\n  base_path: {models}\n  custom_nodes: {work / 'custom_nodes'}\n{folders}"
    )
    port = free_port()
    log_path = work / "comfyui.log"
    command = [
        COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1",
        "--port", str(port), "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
        "--output-directory", str(work / "output"), "--temp-directory", str(work / "temp"),
        "--user-directory", str(work / "user"), "--input-directory", str(work / "input"),
        "--extra-model-paths-config", str(work / "extra_model_paths.yaml"),
        "--fp32-text-enc",  # on CPU ComfyUI runs text encoders in fp16; parity tests compare with fp32 references
        # only the checkout under test and the stand-in, whatever else the ComfyUI checkout has installed
        "--disable-all-custom-nodes", "--whitelist-custom-nodes", LANE_PACK, "stand_in_text_encoder",
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT)
    server = Comfy(f"http://127.0.0.1:{port}", str(log_path), work)
    try:
        deadline = time.time() + 180
        while True:
            try:
                server.get("/object_info/GenAffectCheckModels")
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.time() > deadline:
                    pytest.fail("ComfyUI did not start:\n" + server.log()[-4000:])
                time.sleep(1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(work / "custom_nodes", ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_diffusion(comfy):
    """Tiny SD1.5 and FLUX models, a CLIP-L and a FLUX VAE in the server's model folders."""
    builder = os.path.join(os.path.dirname(__file__), "tiny_diffusion_models.py")
    done = subprocess.run([COMFYUI_PYTHON, builder, str(comfy.models)], cwd=COMFYUI_DIR, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return comfy


@pytest.fixture(scope="session")
def editor_models(tiny_diffusion):
    """Tiny Qwen-Image-Edit and FLUX.2 [klein] models, their VAEs and a LoRA in PixelSmile's layout."""
    builder = os.path.join(os.path.dirname(__file__), "editor_models.py")
    done = subprocess.run([COMFYUI_PYTHON, builder, str(tiny_diffusion.models)], cwd=COMFYUI_DIR, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return tiny_diffusion


@pytest.fixture(scope="session")
def arc2face_models(comfy):
    """A full-size random Arc2Face in its published layout, an SD1.5 VAE, a tiny arcface.onnx and a
    blendshape -> FLAME-55 mapping in the server's model folders."""
    pytest.importorskip("diffusers", reason="the Arc2Face tests need diffusers in ComfyUI's Python (CONTRIBUTING.md)")
    builder = os.path.join(os.path.dirname(__file__), "arc2face_models.py")
    done = subprocess.run([COMFYUI_PYTHON, builder, str(comfy.models)], cwd=COMFYUI_DIR, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    import numpy as np
    import onnx
    from genaffect.models.expression.expression_mapping import fit_mapping, save_mapping
    from tiny_insightface import tiny_recognizer

    onnx.save(tiny_recognizer(seed=5), str(comfy.models / "arc2face" / "arcface.onnx"))
    rng = np.random.default_rng(0)
    blendshapes = rng.uniform(0, 1, (200, 52))
    flame = blendshapes @ rng.normal(0, 0.5, (52, 55)) + rng.normal(0, 0.01, (200, 55))
    (comfy.models / "genaffect" / "mappings").mkdir(parents=True, exist_ok=True)
    save_mapping(fit_mapping(blendshapes, flame), str(comfy.models / "genaffect" / "mappings" / "test_map.safetensors"))
    return comfy
