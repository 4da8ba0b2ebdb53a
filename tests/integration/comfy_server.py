"""A ComfyUI server driven over HTTP, and where the integration tests find ComfyUI and test models."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
# A real MediaPipe face_landmarker.task, when the tester has one (see CONTRIBUTING.md, "Real models").
REAL_LANDMARKER = os.path.join(os.environ.get("GENAFFECT_TEST_MODELS", ""), "mediapipe", "face_landmarker.task")
HAS_REAL_LANDMARKER = os.path.isfile(REAL_LANDMARKER)
# The checkout under test is linked into the server's custom nodes under this name, and only it (and the test's
# stand-in text encoder) is loaded: a ComfyUI that already has the pack installed in its own custom_nodes (under
# any name) would otherwise load it twice and list its templates twice.
LANE_PACK = "genaffect_under_test"
MODEL_FOLDERS = ("insightface", "mediapipe", "diffusion_models", "text_encoders", "vae", "loras", "arc2face", "genaffect",
                 "smirk")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Comfy:
    def __init__(self, url: str, log_path: str, work):
        self.url, self.log_path, self.work = url, log_path, work
        self.models = work / "models"

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()  # /free and /interrupt answer with an empty body
                return response.status, json.loads(body) if body else None
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

    def workflow_prompt(self, name: str) -> dict:
        """workflows/<name>.json converted to the API format by comfy-cli against this server's nodes."""
        convert = pytest.importorskip("comfy_cli.workflow_to_api", reason="pip install comfy-cli for the UI-to-API converter")
        with open(os.path.join(REPO, "workflows", f"{name}.json")) as handle:
            workflow = json.load(handle)
        return convert.convert_ui_to_api(workflow, self.get("/object_info"))


