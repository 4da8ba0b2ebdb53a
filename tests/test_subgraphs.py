"""Subgraph blueprints (subgraphs/*.json, which ComfyUI serves at /global_subgraphs and the frontend lists under
"Subgraph Blueprints"): each is a workflow whose root is one node of the one subgraph in definitions.subgraphs, the
shape the frontend writes with "Save as blueprint". The inner graph is checked like the example workflows."""

import fnmatch
import glob
import json
import os

import pytest

from genaffect import NODE_CLASS_MAPPINGS
from workflow_checks import check_links, check_no_overlap, check_nodes, offer_catalog_files, widget_inputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLUEPRINTS = sorted(glob.glob(os.path.join(REPO, "subgraphs", "*.json")))
INPUT_NODE, OUTPUT_NODE = -10, -20  # litegraph's ids for a subgraph's input and output boxes


def load(path):
    with open(path, encoding="utf-8") as handle:
        blueprint = json.load(handle)
    (definition,) = blueprint["definitions"]["subgraphs"]
    return blueprint, definition


def test_the_two_blueprints_the_pack_promises_are_there():
    names = {os.path.splitext(os.path.basename(path))[0] for path in BLUEPRINTS}
    assert {"GenAffect Expression Sheet from One Photo", "GenAffect Score a Generated Set"} <= names


@pytest.mark.parametrize("path", BLUEPRINTS, ids=os.path.basename)
def test_blueprint_root_is_one_node_of_its_one_subgraph_mirroring_its_inputs_and_outputs(path):
    blueprint, definition = load(path)
    (host,) = blueprint["nodes"]
    assert host["type"] == definition["id"] and blueprint["links"] == []
    assert definition["name"] == host["title"] == os.path.splitext(os.path.basename(path))[0]  # the name shown
    assert definition["description"]  # the frontend shows it as the blueprint's help
    assert definition["category"] == "GenAffect"  # listed under Subgraph Blueprints/GenAffect
    assert [(s["name"], s["type"]) for s in host["inputs"]] == [(s["name"], s["type"]) for s in definition["inputs"]]
    assert [(s["name"], s["type"]) for s in host["outputs"]] == [(s["name"], s["type"]) for s in definition["outputs"]]
    assert definition["inputNode"]["id"] == INPUT_NODE and definition["outputNode"]["id"] == OUTPUT_NODE


@pytest.mark.parametrize("path", BLUEPRINTS, ids=os.path.basename)
def test_blueprint_inner_nodes_widgets_and_links_match_the_node_definitions(path, models_dir):
    offer_catalog_files(models_dir)
    _, definition = load(path)
    nodes = {node["id"]: node for node in definition["nodes"]}
    check_nodes(definition["nodes"])
    links = [(l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"])
             for l in definition["links"]]
    assert len({link[0] for link in links}) == len(links)
    assert max(nodes) <= definition["state"]["lastNodeId"] and len(links) <= definition["state"]["lastLinkId"]
    for _, source, _, target, _, _ in links:
        assert source in nodes or source == INPUT_NODE, source
        assert target in nodes or target == OUTPUT_NODE, target
    check_links(nodes, links)
    check_no_overlap(definition["nodes"])


@pytest.mark.parametrize("path", BLUEPRINTS, ids=os.path.basename)
def test_blueprint_takes_models_and_photos_as_inputs_and_loads_nothing_itself(path):
    _, definition = load(path)
    for node in definition["nodes"]:
        assert not (node["type"].endswith("Loader") or node["type"].startswith("Load")), node["type"]


@pytest.mark.parametrize("path", BLUEPRINTS, ids=os.path.basename)
def test_blueprint_inputs_and_outputs_are_wired_and_every_required_inner_input_is_fed(path):
    _, definition = load(path)
    links = {l["id"]: l for l in definition["links"]}
    nodes = {node["id"]: node for node in definition["nodes"]}
    for index, slot in enumerate(definition["inputs"]):
        assert slot["linkIds"], f"input {slot['name']} goes nowhere"
        for link_id in slot["linkIds"]:
            link = links[link_id]
            assert (link["origin_id"], link["origin_slot"], link["type"]) == (INPUT_NODE, index, slot["type"])
            target = nodes[link["target_id"]]["inputs"][link["target_slot"]]
            assert target["type"] == slot["type"] and target["link"] == link_id
    for index, slot in enumerate(definition["outputs"]):
        (link_id,) = slot["linkIds"]  # an output shows exactly one inner output
        link = links[link_id]
        assert (link["target_id"], link["target_slot"], link["type"]) == (OUTPUT_NODE, index, slot["type"])
        assert link_id in nodes[link["origin_id"]]["outputs"][link["origin_slot"]]["links"]
    ends = {(l["origin_id"], l["origin_slot"]) for l in links.values() if l["origin_id"] == INPUT_NODE}
    assert ends == {(INPUT_NODE, i) for i in range(len(definition["inputs"]))}
    for node in definition["nodes"]:
        if node["type"] in NODE_CLASS_MAPPINGS:
            declared = NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()
            for slot in node["inputs"]:
                required = slot["name"] in declared["required"]
                assert required or slot["name"] in declared.get("optional", {}), (node["type"], slot["name"])
                assert (slot.get("shape") == 7) == (not required), (node["type"], slot["name"])
        for slot in node["inputs"]:
            if slot.get("shape") != 7:
                assert slot["link"] is not None, f"{node['type']}.{slot['name']} is required and not connected"


@pytest.mark.parametrize("path", BLUEPRINTS, ids=os.path.basename)
def test_blueprint_promoted_widgets_name_widgets_of_its_inner_nodes(path):
    blueprint, definition = load(path)
    nodes = {str(node["id"]): node for node in definition["nodes"]}
    for node_id, widget in blueprint["nodes"][0]["properties"]["proxyWidgets"]:
        kind = nodes[node_id]["type"]
        assert widget in [name for name, _ in widget_inputs(NODE_CLASS_MAPPINGS[kind])], (kind, widget)


def test_blueprints_ship_in_the_registry_package():
    with open(os.path.join(REPO, ".comfyignore")) as handle:
        patterns = [line.strip().strip("/") for line in handle if line.strip() and not line.startswith("#")]
    for path in BLUEPRINTS:
        relative = os.path.relpath(path, REPO)
        for pattern in patterns:
            assert not any(fnmatch.fnmatch(part, pattern) for part in ("subgraphs", relative)), pattern
