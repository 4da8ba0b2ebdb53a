"""Every family record names what ComfyUI's own classes hold: the class at its module path, and on a diffusion
transformer the block lists, the width, the latent patch and the register count the hosts read (read from the
ComfyUI checkout's source, so it runs wherever COMFYUI_DIR is set, without starting ComfyUI)."""

from __future__ import annotations

import ast
import os

import pytest
from comfy_server import COMFYUI_DIR
from genaffect.models.generation.backbones import BACKBONES, REFUSED


def assigned_attributes(path: str) -> dict[str, set[str]]:
    """Per class in the file: the ``self.<name> = ...`` attributes its methods set."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    classes = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names = {target.attr for item in ast.walk(node) if isinstance(item, (ast.Assign, ast.AnnAssign))
                     for target in (item.targets if isinstance(item, ast.Assign) else [item.target])
                     if isinstance(target, ast.Attribute) and getattr(target.value, "id", "") == "self"}
            classes[node.name] = names
    return classes


def comfy_class(path: str) -> set[str]:
    """The attributes the ComfyUI class at ``path`` ("module.Class") sets."""
    module, name = path.rsplit(".", 1)
    source = os.path.join(COMFYUI_DIR, *module.split(".")) + ".py"
    assert os.path.isfile(source), f"{path}: ComfyUI has no {source}"
    classes = assigned_attributes(source)
    assert name in classes, f"{path}: no class {name} in {source}"
    return classes[name]


@pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run the integration tests")
@pytest.mark.parametrize("record", BACKBONES, ids=lambda record: record.name)
def test_each_record_names_attributes_comfyuis_class_sets(record):
    for path in record.comfy_classes:
        attributes = comfy_class(path)
        if record.kind == "dit":
            wanted = {record.double_blocks, record.comfy_width, "patch_size"}
            wanted |= {name for name in (record.single_blocks, record.comfy_registers) if name}
            assert wanted <= attributes, f"{path} sets none of {sorted(wanted - attributes)}"


@pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run the integration tests")
def test_refused_families_name_classes_comfyui_has():
    for path in REFUSED:
        comfy_class(path)
