"""Run the pack inside a real ComfyUI: node registration, import log, and the example workflow.

Runs when COMFYUI_DIR points at a ComfyUI checkout whose Python has its requirements (and
comfy-cli, for its UI-to-API workflow converter). COMFYUI_PYTHON names that Python (default: the
one running pytest). ComfyUI starts on loopback with --cpu, the pack linked in through an
extra_model_paths file, and tiny insightface models written by the test.
"""

from __future__ import annotations

import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from genaffect import NODE_CLASS_MAPPINGS

from comfy_server import HAS_REAL_LANDMARKER, LANE_PACK, REPO


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


def test_the_pack_imports_once_without_failure_beside_an_installed_copy(comfy):
    """The server's custom nodes hold the checkout under test and a copy installed the usual way (custom_nodes/
    genaffect, as on a machine that has the pack): only the checkout loads."""
    log = comfy.log().replace(os.sep, "/")
    assert f"custom_nodes/{LANE_PACK}" in log and "Skipping genaffect due to disable_all_custom_nodes" in log
    assert "IMPORT FAILED" not in log and "Cannot import" not in log, log[-3000:]
    assert comfy.get("/object_info/GenAffectAlignFace")["GenAffectAlignFace"]["python_module"] == \
        f"custom_nodes.{LANE_PACK}"


def test_example_workflows_are_served_as_templates_by_the_loaded_copy_only(comfy):
    """ComfyUI lists the templates of every folder in custom_nodes, loaded or not, but serves only a loaded
    pack's: the templates open from the checkout under test, never from the copy beside it."""
    templates = comfy.get("/api/workflow_templates")
    expected = {os.path.splitext(name)[0] for name in os.listdir(os.path.join(REPO, "workflows"))
                if name.endswith(".json")}
    assert expected <= set(templates.get(LANE_PACK, [])), templates
    name = min(expected)
    assert comfy.get(f"/api/workflow_templates/{LANE_PACK}/{name}.json")["nodes"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        comfy.get(f"/api/workflow_templates/genaffect/{name}.json")
    assert refused.value.code == 404


def test_every_template_photo_is_in_the_input_folder_and_offered_by_load_image(comfy):
    """The pack put its example photo into ComfyUI's input folder when it loaded: no template needs a file nobody
    has."""
    offered = comfy.get("/object_info/LoadImage")["LoadImage"]["input"]["required"]["image"][0]
    for name in os.listdir(os.path.join(REPO, "workflows")):
        if name.endswith(".json"):
            with open(os.path.join(REPO, "workflows", name)) as handle:
                photos = [n["widgets_values"][0] for n in json.load(handle)["nodes"] if n["type"] == "LoadImage"]
            assert set(photos) <= set(offered), (name, photos)


def test_identity_workflow_runs_and_returns_its_previews(comfy):
    prompt = comfy.workflow_prompt("identity_from_photos")
    next(node for node in prompt.values() if node["class_type"] == "LoadImage")["inputs"]["image"] = "example.png"
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


def test_a_graph_naming_a_missing_file_is_refused_before_it_runs_with_the_fix(comfy):
    """The loader's VALIDATE_INPUTS answers when the graph is queued: ComfyUI shows the missing file, where to
    download it and the folder, before anything runs (and lists every missing file of a graph at once)."""
    prompt = {
        "1": {"class_type": "GenAffectFaceAnalyzerLoader", "inputs": {
            "pack": "antelopev2", "recognition": "arcface.onnx (Arc2Face)", "provider": "CPU",
            "detection_size": 256, "detection_threshold": 0.49}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
    }
    installed = comfy.models / "arc2face" / "arcface.onnx"  # written by the Arc2Face tests when they ran first
    hidden = installed.with_suffix(".hidden")
    if installed.exists():
        installed.rename(hidden)
    try:
        status, answer = comfy.post("/prompt", {"prompt": prompt})
    finally:
        if hidden.exists():
            hidden.rename(installed)
    assert status == 400 and answer["error"]["type"] == "prompt_outputs_failed_validation", answer
    details = [error["details"] for error in answer["node_errors"]["1"]["errors"]]
    assert details and all("arcface.onnx was not found" in detail and "huggingface.co/FoivosPar/Arc2Face" in detail
                           and str(comfy.models / "arc2face") in detail for detail in details), details


def test_expression_transition_workflow_runs_and_describes_each_step(comfy):
    result = comfy.run(comfy.workflow_prompt("expression_transition_prompts"))
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[-3000:]
    texts = [text for output in result["outputs"].values() for text in output.get("text", [])]
    lines = texts[0].splitlines()
    assert len(lines) == 5
    assert lines[0] == "close-up portrait photo of a person, neutral expression, relaxed face"
    assert "left mouth corner" in lines[-1] and "right mouth corner" in lines[-1]


def test_the_no_download_workflow_draws_the_library_sheet_and_the_sculpted_face(comfy):
    result = comfy.run(comfy.workflow_prompt("expression_library_faces"))
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[-3000:]
    images = [image for output in result["outputs"].values() for image in output.get("images", [])]
    assert len(images) == 2
    sizes = []
    for image in images:
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{comfy.url}/view?{query}", timeout=30) as response:
            sizes.append(Image.open(io.BytesIO(response.read())).size)
    sizes.sort()
    assert sizes[1][0] > 4 * 192  # 8 basic emotions in 4 columns of 192-px faces


def test_comfyui_lists_every_workflow_as_a_template_and_serves_its_thumbnail(comfy):
    listed = comfy.get("/workflow_templates")[LANE_PACK]
    assert sorted(listed) == sorted(f[:-5] for f in os.listdir(os.path.join(REPO, "workflows")) if f.endswith(".json"))
    for name in listed:
        with urllib.request.urlopen(f"{comfy.url}/api/workflow_templates/{LANE_PACK}/{name}.jpg",
                                    timeout=30) as response:
            assert response.status == 200 and Image.open(io.BytesIO(response.read())).size == (512, 384)


def test_the_live_editors_routes_answer_with_the_face_model_and_the_nodes_output(comfy):
    data = comfy.get("/genaffect/expression_editor/data")
    assert len(data["blendshape_names"]) == 52 and "jawOpen" in data["model"]["moves"] and data["presets"]
    status, answer = comfy.post("/genaffect/expression_editor/preview",
                                {"node": "GenAffectExpressionPreset", "inputs": {"expressions": "happy, pout", "intensity": 1}})
    assert status == 200 and answer["labels"] == ["happy", "pout"] and len(answer["blendshapes"][0]) == 52
    status, answer = comfy.post("/genaffect/expression_editor/preview",
                                {"node": "GenAffectExpressionPreset", "inputs": {"expressions": "hapy", "intensity": 1}})
    assert status == 400 and "hapy" in answer["error"]


def _expression_sheet_prompt(comfy):
    prompt = comfy.workflow_prompt("expression_sheet_from_photos")
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
