"""What a real ComfyUI serves its frontend for this pack, over HTTP: each node's help page at the URL the frontend
asks first, the subgraph blueprints at /global_subgraphs, no node ComfyUI marks deprecated in the workflows and
blueprints, and Batch Images (core's replacement for the deprecated Image Batch) converting from the workflows and
running. A blueprint runs too, converted by comfy-cli the way the frontend expands a subgraph."""

from __future__ import annotations

import glob
import json
import os
import urllib.error
import urllib.request

import pytest

from genaffect import NODE_CLASS_MAPPINGS
from workflow_checks import CORE_NODES, DEPRECATED_CORE_NODES

from comfy_server import REPO

DOCS = os.path.join(REPO, "js", "docs")
BLUEPRINTS = sorted(glob.glob(os.path.join(REPO, "subgraphs", "*.json")))
WORKFLOWS = sorted(glob.glob(os.path.join(REPO, "workflows", "*.json")))


def fetch(comfy, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(comfy.url + path, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), b""


def pack_id(comfy) -> str:
    """The pack's id as the frontend reads it from python_module (custom_nodes.<folder>, "@version" dropped)."""
    module = comfy.get("/object_info/GenAffectAlignFace")["GenAffectAlignFace"]["python_module"]
    return module.split(".")[1].split("@")[0]


def help_urls(comfy, node: str, locale: str) -> list[str]:
    """The URLs ComfyUI_frontend's NodeHelpService.fetchCustomNodeHelp requests, in its order."""
    pack = pack_id(comfy)
    return [f"/extensions/{pack}/docs/{node}/{locale}.md", f"/extensions/{pack}/docs/{node}.md"]


def page(name: str) -> bytes:
    with open(os.path.join(DOCS, f"{name}.md"), "rb") as handle:
        return handle.read()


def test_the_first_help_url_the_frontend_asks_in_english_answers_for_every_node(comfy):
    for node in NODE_CLASS_MAPPINGS:
        first, _ = help_urls(comfy, node, "en")
        status, kind, body = fetch(comfy, first)
        assert status == 200 and "text/html" not in kind, (first, status, kind)  # HTML would be refused as help
        assert body == page(node)


def test_a_locale_without_a_translation_gets_the_english_page_from_the_second_url(comfy):
    first, second = help_urls(comfy, "GenAffectExpressionEditor", "zh")
    assert fetch(comfy, first)[0] == 404
    status, kind, body = fetch(comfy, second)
    assert status == 200 and "text/html" not in kind and body == page("GenAffectExpressionEditor")


def test_blueprints_are_listed_under_the_packs_name_and_served_as_saved(comfy):
    entries = comfy.get("/global_subgraphs")
    ours = {entry["name"]: key for key, entry in entries.items()
            if entry["source"] == "custom_node" and entry["info"]["node_pack"] == f"custom_nodes.{pack_id(comfy)}"}
    assert set(ours) == {os.path.splitext(os.path.basename(path))[0] for path in BLUEPRINTS}, entries
    for path in BLUEPRINTS:
        served = comfy.get(f"/global_subgraphs/{ours[os.path.splitext(os.path.basename(path))[0]]}")
        with open(path, encoding="utf-8") as handle:
            assert json.loads(served["data"]) == json.load(handle)


def _used_node_types() -> set[str]:
    used = set()
    for path in WORKFLOWS + BLUEPRINTS:
        with open(path, encoding="utf-8") as handle:
            graph = json.load(handle)
        inner = [node for sub in graph.get("definitions", {}).get("subgraphs", []) for node in sub["nodes"]]
        subgraph_ids = {sub["id"] for sub in graph.get("definitions", {}).get("subgraphs", [])}
        used |= {node["type"] for node in graph["nodes"] + inner if node["type"] not in subgraph_ids}
    return used - {"Note", "MarkdownNote"}  # frontend-only nodes, not in /object_info


def test_the_ci_list_of_deprecated_core_nodes_is_comfyuis(comfy):
    info = comfy.get("/object_info")
    served = {name for name, node in info.items()
              if node.get("deprecated") and not node["python_module"].startswith("custom_nodes")}
    assert served == DEPRECATED_CORE_NODES, (
        f"update DEPRECATED_CORE_NODES in tests/test_workflows.py: add {sorted(served - DEPRECATED_CORE_NODES)}, "
        f"remove {sorted(DEPRECATED_CORE_NODES - served)}")


def test_no_workflow_or_blueprint_uses_a_node_comfyui_marks_deprecated(comfy):
    info = comfy.get("/object_info")
    for kind in _used_node_types() | (CORE_NODES - {"Note", "MarkdownNote"}):
        assert kind in info, f"{kind} is not a node of this ComfyUI"
        assert not info[kind].get("deprecated"), f"{kind} ({info[kind]['display_name']}) is deprecated"


@pytest.mark.parametrize("workflow", ["arc2face_expression_sheet", "arc2face_expression_transfer"])
def test_batch_images_in_the_workflows_converts_to_its_photos_in_order(comfy, workflow):
    with open(os.path.join(REPO, "workflows", f"{workflow}.json")) as handle:
        ui = json.load(handle)
    sources = {link[0]: (str(link[1]), link[2]) for link in ui["links"]}
    prompt = comfy.workflow_prompt(workflow)
    for node in (node for node in ui["nodes"] if node["type"] == "BatchImagesNode"):
        wanted = {slot["name"]: list(sources[slot["link"]]) for slot in node["inputs"] if slot["link"] is not None}
        assert prompt[str(node["id"])]["inputs"] == wanted


def test_batch_images_of_the_arc2face_sheet_runs_and_batches_the_three_driving_photos(comfy):
    prompt = comfy.workflow_prompt("arc2face_expression_sheet")
    (key, batch), = [(key, node) for key, node in prompt.items() if node["class_type"] == "BatchImagesNode"]
    graph = {key: batch, "preview": {"class_type": "PreviewImage", "inputs": {"images": [key, 0]}}}
    for source, _ in batch["inputs"].values():
        graph[source] = prompt[source]
        assert graph[source]["class_type"] == "LoadImage"
        graph[source]["inputs"]["image"] = "astronaut.png"  # 512 x 512; example.png is 256 x 256: resized to the first
    graph[batch["inputs"]["images.image1"][0]]["inputs"]["image"] = "example.png"
    result = comfy.run(graph)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[-3000:]
    (images,) = [output["images"] for output in result["outputs"].values()]
    assert len(images) == 3


class BlueprintGraph:
    """A blueprint as a user adds it (its root node, the subgraph in definitions) with outer nodes wired to its
    inputs and outputs, converted by comfy-cli the way the frontend expands a subgraph into the API prompt."""

    def __init__(self, name: str):
        with open(os.path.join(REPO, "subgraphs", f"{name}.json"), encoding="utf-8") as handle:
            self.workflow = json.load(handle)
        (self.host,) = self.workflow["nodes"]

    def node(self, kind: str, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]], widgets: list) -> dict:
        node = {"id": max(n["id"] for n in self.workflow["nodes"]) + 1, "type": kind, "pos": [0, 0],
                "size": [300, 100], "flags": {}, "order": 0, "mode": 0,
                "inputs": [{"name": name, "type": type_, "link": None} for name, type_ in inputs],
                "outputs": [{"name": name, "type": type_, "links": []} for name, type_ in outputs],
                "properties": {"Node name for S&R": kind}, "widgets_values": widgets}
        self.workflow["nodes"].append(node)
        return node

    def wire(self, source: dict, output: str, target: dict, input_name: str) -> None:
        link_id = len(self.workflow["links"]) + 1
        out_slot = [slot["name"] for slot in source["outputs"]].index(output)
        in_slot = [slot["name"] for slot in target["inputs"]].index(input_name)
        kind = source["outputs"][out_slot]["type"]
        source["outputs"][out_slot]["links"].append(link_id)
        target["inputs"][in_slot]["link"] = link_id
        self.workflow["links"].append([link_id, source["id"], out_slot, target["id"], in_slot, kind])

    def photo_and_identity(self) -> tuple[dict, dict, dict]:
        """example.png (two painted faces), the tiny face analyzer on CPU and the photo's identity."""
        photo = self.node("LoadImage", [], [("IMAGE", "IMAGE"), ("MASK", "MASK")], ["example.png", "image"])
        analyzer = self.node("GenAffectFaceAnalyzerLoader", [],
                             [("face_analyzer", "GA_FACE_ANALYZER"), ("info", "STRING")],
                             ["antelopev2", "pack default", "CPU", 256, 0.5])
        identity = self.node("GenAffectExtractIdentity", [("face_analyzer", "GA_FACE_ANALYZER"), ("images", "IMAGE")],
                             [("identity", "GA_IDENTITY"), ("face_crops", "IMAGE"), ("preview", "IMAGE"),
                              ("report", "STRING")], ["largest", 0, "skip", 0.3, False])
        self.wire(analyzer, "face_analyzer", identity, "face_analyzer")
        self.wire(photo, "IMAGE", identity, "images")
        return photo, analyzer, identity

    def show(self, output: str, kind: str = "PreviewAny") -> str:
        """A viewer on one of the blueprint's outputs; its key in the run's outputs."""
        viewer = self.node(kind, [("images", "IMAGE")] if kind == "PreviewImage" else [("source", "*")], [], [])
        self.wire(self.host, output, viewer, viewer["inputs"][0]["name"])
        return str(viewer["id"])

    def prompt(self, comfy) -> dict:
        convert = pytest.importorskip("comfy_cli.workflow_to_api",
                                      reason="pip install comfy-cli for the UI-to-API converter")
        return convert.convert_ui_to_api(self.workflow, comfy.get("/object_info"))


def _results(result: dict) -> tuple[list, list]:
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[-3000:]
    images = [image for output in result["outputs"].values() for image in output.get("images", [])]
    texts = [text for output in result["outputs"].values() for text in output.get("text", [])]
    return images, texts


def test_the_score_blueprint_converts_and_runs_on_a_photo_with_its_optional_inputs_left_open(comfy):
    """Fed a loaded photo, the face analyzer and the photo's identity; target_expression, estimator and face_landmarks
    left unconnected, so Face Metrics scores identity only and the sheet numbers the faces."""
    graph = BlueprintGraph("GenAffect Score a Generated Set")
    photo, analyzer, identity = graph.photo_and_identity()
    graph.wire(photo, "IMAGE", graph.host, "images")
    graph.wire(analyzer, "face_analyzer", graph.host, "face_analyzer")
    graph.wire(identity, "identity", graph.host, "identity")
    graph.show("sheet", "PreviewImage")
    graph.show("summary")
    prompt = graph.prompt(comfy)
    assert sorted(node["class_type"] for node in prompt.values()) == sorted(
        ["LoadImage", "GenAffectFaceAnalyzerLoader", "GenAffectExtractIdentity", "GenAffectFaceMetrics",
         "GenAffectExpressionSheet", "PreviewImage", "PreviewAny"])
    images, texts = _results(comfy.run(prompt))
    assert len(images) == 1  # the sheet
    own = "identity cosine to reference: mean 1.000"  # the photo is its own reference
    assert any("faces found: 1/1" in text and own in text for text in texts), texts


def test_the_expression_sheet_blueprint_runs_on_tiny_flux2_klein(editor_models):
    """Fed a photo, three presets, the tiny FLUX.2 [klein] and its VAE (the tiny model reads the random CLIP-L),
    the face analyzer: one edited image per expression, a sheet, one instruction per expression."""
    from sampling_runs import CLIP, run_ok

    comfy = editor_models
    graph = BlueprintGraph("GenAffect Expression Sheet from One Photo")
    photo, analyzer, _ = graph.photo_and_identity()
    expression = graph.node("GenAffectExpressionPreset", [], [("expression", "GA_EXPRESSION")],
                            ["happy, sad, surprised", 1.0])
    unet = graph.node("UNETLoader", [], [("MODEL", "MODEL")], ["tiny_flux2_klein.safetensors", "default"])
    clip = graph.node("CLIPLoader", [], [("CLIP", "CLIP")],
                      [CLIP["inputs"]["clip_name"], CLIP["inputs"]["type"], "default"])
    vae = graph.node("VAELoader", [], [("VAE", "VAE")], ["tiny_flux2_vae.safetensors"])
    for source, output, name in [(photo, "IMAGE", "photo"), (expression, "expression", "expression"),
                                 (unet, "MODEL", "model"), (clip, "CLIP", "clip"), (vae, "VAE", "vae"),
                                 (analyzer, "face_analyzer", "face_analyzer")]:
        graph.wire(source, output, graph.host, name)
    sheet, edits = graph.show("sheet", "PreviewImage"), graph.show("images", "PreviewImage")
    prompts = graph.show("prompts")
    prompt = graph.prompt(comfy)
    for node in prompt.values():
        if node["class_type"] == "ImageScaleToTotalPixels":
            node["inputs"]["megapixels"] = 0.0156  # 128 x 128
        elif node["class_type"] == "GenAffectConsistentBatchSampler":
            node["inputs"]["steps"] = 2
    result = run_ok(comfy, prompt, timeout=600)
    _, texts = _results(result)
    assert len(result["outputs"][sheet]["images"]) == 1 and len(result["outputs"][edits]["images"]) == 3
    (instructions,) = result["outputs"][prompts]["text"]
    lines = instructions.splitlines()
    assert len(lines) == 3 and all(line.startswith("Change only the person's facial expression:") for line in lines)
    assert any(text.startswith("faces found: ") and "/3" in text for text in texts), texts  # Face Metrics' summary
