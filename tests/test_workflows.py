"""Example workflows (UI format) agree with the nodes' declared inputs and outputs."""

import glob
import json
import os

import pytest
from workflow_checks import (
    CORE_NODES,
    DEPRECATED_CORE_NODES,
    check_links,
    check_no_overlap,
    check_nodes,
    offer_catalog_files,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(glob.glob(os.path.join(REPO, "workflows", "*.json")))


def test_there_is_an_example_workflow():
    assert WORKFLOWS


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_nodes_widgets_and_links_match_the_node_definitions(path, models_dir):
    offer_catalog_files(models_dir)
    with open(path) as handle:
        workflow = json.load(handle)
    check_nodes(workflow["nodes"])
    check_links({node["id"]: node for node in workflow["nodes"]}, workflow["links"])


def test_no_workflow_uses_a_node_comfyui_marks_deprecated():
    assert not CORE_NODES & DEPRECATED_CORE_NODES
    for path in WORKFLOWS:
        with open(path) as handle:
            workflow = json.load(handle)
        inner = [node for graph in workflow.get("definitions", {}).get("subgraphs", []) for node in graph["nodes"]]
        used = {node["type"] for node in workflow["nodes"] + inner}
        assert not used & DEPRECATED_CORE_NODES, (os.path.basename(path), sorted(used & DEPRECATED_CORE_NODES))


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_nodes_do_not_overlap_so_every_setting_is_visible(path):
    with open(path) as handle:
        check_no_overlap(json.load(handle)["nodes"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_loaders_of_downloadable_files_carry_the_download_metadata_comfyui_offers(path):
    """properties.models (name, url, directory) lets ComfyUI offer a missing file instead of "not in []"."""
    from genaffect.models.files.model_catalog import CATALOG

    fetchable = {entry.path: entry for entry in CATALOG if entry.download_url}
    files = {entry.path: entry for entry in CATALOG}  # SMIRK_em1.pt is got from a page: offered with that link
    with open(path) as handle:
        nodes = json.load(handle)["nodes"]
    for node in nodes:
        offered = node.get("properties", {}).get("models", [])
        for model in offered:
            assert set(model) == {"name", "url", "directory"} and model["url"].startswith("https://"), model
        names = {model["name"] for model in offered}
        values = [v for v in node.get("widgets_values", []) if isinstance(v, str)]
        wanted = {value for value in values if value in files}
        if node["type"] == "GenAffectExpressionEstimatorLoader":
            wanted.add("face_landmarker.task")
        if node["type"] == "GenAffectArc2FaceLoader":
            wanted |= {p for p, e in fetchable.items() if e.group == "Arc2Face" and e.folder == "arc2face"}
        if node["type"] == "GenAffectFaceAnalyzerLoader" and "arcface.onnx (Arc2Face)" in values:
            wanted.add("arcface.onnx")
        assert wanted <= names, (node["type"], sorted(wanted - names))
        for model in offered:
            entry = files.get(model["name"])
            if entry is not None:  # the catalog is the one source of GenAffect's files
                assert (model["url"], model["directory"]) == (entry.link, entry.folder), model


FRONTEND_TEXT_ZOOM = 0.6  # below it ComfyUI's frontend draws nodes as empty boxes, without titles or widgets


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_every_workflow_opens_at_a_zoom_where_the_frontend_draws_text(path):
    with open(path) as handle:
        scale = json.load(handle)["extra"]["ds"]["scale"]
    assert scale >= FRONTEND_TEXT_ZOOM, scale


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_every_load_image_starts_on_the_photo_the_pack_provides(path):
    """No template needs a file nobody has: Load Image names the example photo that the pack puts in ComfyUI's
    input folder when it loads (nodes/comfy_host.provide_example_photo)."""
    from genaffect.models.files.packaged_data import EXAMPLE_PHOTO, data_path

    with open(path) as handle:
        images = [node["widgets_values"][0] for node in json.load(handle)["nodes"] if node["type"] == "LoadImage"]
    assert all(image == EXAMPLE_PHOTO for image in images), images
    assert os.path.isfile(data_path(EXAMPLE_PHOTO))
