"""Run the pack inside a real ComfyUI: node registration, import log, and the example workflow.

Runs when COMFYUI_DIR points at a ComfyUI checkout whose Python has its requirements (and
comfy-cli, for its UI-to-API workflow converter). COMFYUI_PYTHON names that Python (default: the
one running pytest). ComfyUI starts on loopback with --cpu, the pack linked in through an
extra_model_paths file, and tiny insightface models written by the test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from genaffect import NODE_CLASS_MAPPINGS

from tiny_insightface import faces_image, write_pack

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
# A real MediaPipe face_landmarker.task, when the tester has one (see README, "Tests").
REAL_LANDMARKER = os.path.join(os.environ.get("GENAFFECT_TEST_MODELS", ""), "mediapipe", "face_landmarker.task")
HAS_REAL_LANDMARKER = os.path.isfile(REAL_LANDMARKER)

pytestmark = pytest.mark.skipif(
    not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run the integration tests (see README)"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Comfy:
    def __init__(self, url: str, log_path: str):
        self.url, self.log_path = url, log_path

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def log(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def run(self, prompt: dict, timeout: float = 120.0) -> dict:
        status, answer = self.post("/prompt", {"prompt": prompt})
        assert status == 200 and not answer.get("node_errors"), answer
        prompt_id = answer["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    work = tmp_path_factory.mktemp("comfyui")
    (work / "custom_nodes").mkdir()
    os.symlink(REPO, work / "custom_nodes" / "genaffect", target_is_directory=True)
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
    (work / "extra_model_paths.yaml").write_text(
        f"test:\n  base_path: {models}\n  custom_nodes: {work / 'custom_nodes'}\n  insightface: insightface\n"
        "  mediapipe: mediapipe\n"
    )
    port = _free_port()
    log_path = work / "comfyui.log"
    command = [
        os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1",
        "--port", str(port), "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
        "--output-directory", str(work / "output"), "--temp-directory", str(work / "temp"),
        "--user-directory", str(work / "user"), "--input-directory", str(work / "input"),
        "--extra-model-paths-config", str(work / "extra_model_paths.yaml"),
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT)
    server = Comfy(f"http://127.0.0.1:{port}", str(log_path))
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


def test_every_node_is_registered_with_its_declared_inputs(comfy):
    info = comfy.get("/object_info")
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert name in info, f"{name} missing from /object_info"
        declared = cls.INPUT_TYPES()
        served = info[name]["input"]
        for section in ("required", "optional"):
            assert list(served.get(section, {})) == list(declared.get(section, {})), (name, section)
        assert info[name]["output"] == list(cls.RETURN_TYPES)
        assert info[name]["category"] == cls.CATEGORY
    assert info["GenAffectFaceAnalyzerLoader"]["input"]["required"]["pack"][0] == ["antelopev2"]


def test_the_pack_imports_without_failure(comfy):
    log = comfy.log()
    assert "custom_nodes/genaffect" in log.replace(os.sep, "/")
    assert "IMPORT FAILED" not in log and "Cannot import" not in log, log[-3000:]


def test_example_workflow_is_served_as_a_template(comfy):
    templates = comfy.get("/api/workflow_templates")
    expected = {"identity_from_photos", "expression_transition_prompts", "expression_sheet_from_photos"}
    assert expected <= set(templates.get("genaffect", [])), templates


def _workflow_prompt(comfy, name: str) -> dict:
    """workflows/<name>.json converted to the API format by comfy-cli against this server's nodes."""
    convert = pytest.importorskip("comfy_cli.workflow_to_api", reason="pip install comfy-cli for the UI-to-API converter")
    with open(os.path.join(REPO, "workflows", f"{name}.json")) as handle:
        workflow = json.load(handle)
    return convert.convert_ui_to_api(workflow, comfy.get("/object_info"))


def test_identity_workflow_runs_and_returns_its_previews(comfy):
    prompt = _workflow_prompt(comfy, "identity_from_photos")
    loader = next(node for node in prompt.values() if node["class_type"] == "GenAffectFaceAnalyzerLoader")
    loader["inputs"]["provider"] = "CPU"
    loader["inputs"]["detection_size"] = 256
    result = comfy.run(prompt)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[-3000:]
    outputs = result["outputs"]
    images = [image for output in outputs.values() for image in output.get("images", [])]
    assert len(images) == 2  # aligned crops and the detections preview
    texts = [text for output in outputs.values() for text in output.get("text", [])]
    assert any("identity from 1 reference(s)" in text and "2 face(s) in image" in text for text in texts), texts
    assert any("GenAffect model check" in text for text in texts)
    with urllib.request.urlopen(
        f"{comfy.url}/view?filename={images[0]['filename']}&type={images[0]['type']}&subfolder={images[0]['subfolder']}"
    ) as response:
        picture = np.asarray(Image.open(response))
    assert picture.shape[:2] in ((112, 112), (256, 256))


def test_a_graph_naming_a_missing_pack_fails_with_the_fix_in_history(comfy):
    prompt = {
        "1": {"class_type": "GenAffectFaceAnalyzerLoader", "inputs": {
            "pack": "antelopev2", "recognition": "arcface.onnx (Arc2Face)", "provider": "CPU",
            "detection_size": 256, "detection_threshold": 0.5}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
    }
    result = comfy.run(prompt)
    assert result["status"]["status_str"] == "error"
    messages = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert messages and "arcface.onnx was not found" in messages[0]["exception_message"]


def test_expression_transition_workflow_runs_and_describes_each_step(comfy):
    result = comfy.run(_workflow_prompt(comfy, "expression_transition_prompts"))
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[-3000:]
    texts = [text for output in result["outputs"].values() for text in output.get("text", [])]
    lines = texts[0].splitlines()
    assert len(lines) == 5
    assert lines[0] == "close-up portrait photo of a person, neutral expression, relaxed face"
    assert "left mouth corner" in lines[-1] and "right mouth corner" in lines[-1]


def _expression_sheet_prompt(comfy):
    prompt = _workflow_prompt(comfy, "expression_sheet_from_photos")
    loader = next(node for node in prompt.values() if node["class_type"] == "GenAffectFaceAnalyzerLoader")
    loader["inputs"].update(provider="CPU", detection_size=512)  # the painted face sits on the 512 px grid
    image = next(node for node in prompt.values() if node["class_type"] == "LoadImage")
    image["inputs"]["image"] = "astronaut.png"
    return prompt


@pytest.mark.skipif(HAS_REAL_LANDMARKER, reason="a real face_landmarker.task is installed: the workflow runs instead")
def test_expression_sheet_workflow_without_the_landmarker_names_the_download(comfy):
    result = comfy.run(_expression_sheet_prompt(comfy))
    assert result["status"]["status_str"] == "error"
    messages = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
    message = messages[0]["exception_message"]
    assert "face_landmarker.task" in message and "storage.googleapis.com" in message and "mediapipe" in message


@pytest.mark.skipif(not HAS_REAL_LANDMARKER, reason="set GENAFFECT_TEST_MODELS to a models folder with mediapipe/face_landmarker.task")
def test_expression_sheet_workflow_runs_with_the_real_landmarker(comfy):
    result = comfy.run(_expression_sheet_prompt(comfy))
    errors = [(m[1]["node_type"], m[1]["exception_message"], m[1]["traceback"][-3:])
              for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert result["status"]["status_str"] == "success", errors
    outputs = result["outputs"]
    images = [image for output in outputs.values() for image in output.get("images", [])]
    assert len(images) == 3  # sheet, chart, landmarks preview
    texts = [text for output in outputs.values() for text in output.get("text", [])]
    assert any("faces found: 1/1" in text and "expression error (blendshape L1): mean 0.000" in text for text in texts), texts
