"""Checks the example workflows and the subgraph blueprints share (and the integration lane, which holds the core
node lists against a real ComfyUI): nodes, widget values and links against the nodes' declarations, no overlap."""

from genaffect import NODE_CLASS_MAPPINGS

# Core ComfyUI nodes the examples and blueprints may use (checked against a real ComfyUI in tests/integration/).
CORE_NODES = {"LoadImage", "PreviewImage", "SaveImage", "PreviewAny", "BatchImagesNode", "Note", "MarkdownNote",
              "UNETLoader", "DualCLIPLoader", "VAELoader", "CLIPTextEncode", "FluxGuidance", "EmptySD3LatentImage",
              "VAEDecode", "EmptyLatentImage", "KSampler", "CLIPLoader", "TextEncodeQwenImageEditPlus", "ReferenceLatent",
              "ImageScaleToTotalPixels", "VAEEncode", "ModelSamplingAuraFlow", "LoraLoaderModelOnly",
              "ConditioningZeroOut", "SaveAnimatedWEBP", "LoadVideo", "GetVideoComponents", "CreateVideo",
              "SaveVideo"}
# Core nodes ComfyUI 0.33 marks deprecated ("deprecated": true in /object_info, most named "... (DEPRECATED)"; the
# frontend hides them from search). tests/integration/test_frontend_paths.py checks this list against a real
# ComfyUI, so a newly deprecated node shows up there.
DEPRECATED_CORE_NODES = {"AddTextPrefix", "AddTextSuffix", "CheckpointLoader", "ControlNetApply", "ControlNetApplySD3",
                         "DiffusersLoader", "ImageBatch", "ImageCrop", "LatentBatch", "MergeImageLists",
                         "MergeTextLists", "PerpNeg", "ReplaceText", "ResizeImagesByLongerEdge",
                         "ResizeImagesByShorterEdge", "SaveAudio", "SaveAudioMP3", "SaveAudioOpus",
                         "SaveImageDataSetToFolder", "StripWhitespace", "TextToLowercase", "TextToUppercase",
                         "VoxelToMeshBasic", "wanBlockSwap"}
# Core nodes with an Autogrow input (inputs "<group>.<prefix>0", "<group>.<prefix>1", ...): group, prefix, min.
AUTOGROW_NODES = {"BatchImagesNode": ("images", "image", 1)}
# What ComfyUI stores after a seed widget with control_after_generate.
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}


def widget_inputs(cls, sections=("required", "optional")):
    """Inputs ComfyUI shows as widgets, in declaration order (what widgets_values lists)."""
    spec = cls.INPUT_TYPES()
    names = []
    for section in sections:
        for name, declaration in spec.get(section, {}).items():
            kind = declaration[0]
            force_input = len(declaration) > 1 and declaration[1].get("forceInput")
            if (isinstance(kind, list) or kind in ("INT", "FLOAT", "BOOLEAN", "STRING")) and not force_input:
                names.append((name, declaration))
                if declaration[1].get("control_after_generate"):
                    names.append(("control_after_generate", (sorted(SEED_CONTROLS),)))
    return names


def offer_catalog_files(models_dir):
    """Empty stand-ins for the user's downloads, so model-file lists offer what the workflows name."""
    from genaffect.models.files.model_catalog import CATALOG

    for entry in CATALOG:
        target = models_dir / entry.folder / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()


def check_autogrow_inputs(node):
    """An Autogrow input as the frontend saves it: <group>.<prefix>0, 1, ... in order, the first `min` required, the
    rest optional (shape 7), every one linked except the last, which is the free slot the frontend keeps open."""
    group, prefix, minimum = AUTOGROW_NODES[node["type"]]
    slots = [slot for slot in node["inputs"] if slot["name"].startswith(group + ".")]
    assert [slot["name"] for slot in slots] == [f"{group}.{prefix}{i}" for i in range(len(slots))], node["id"]
    assert all(slot["link"] is not None for slot in slots[:-1]) and slots[-1]["link"] is None, node["id"]
    assert [slot.get("shape") == 7 for slot in slots] == [i >= minimum for i in range(len(slots))], node["id"]


def check_nodes(nodes):
    """Every node is ours or a known core node, none deprecated; ours carry one valid value per widget."""
    for node in nodes:
        kind = node["type"]
        assert kind not in DEPRECATED_CORE_NODES, f"{kind} is deprecated in ComfyUI"
        assert kind in NODE_CLASS_MAPPINGS or kind in CORE_NODES, f"unknown node type {kind}"
        if kind in AUTOGROW_NODES:
            check_autogrow_inputs(node)
        if kind not in NODE_CLASS_MAPPINGS:
            continue
        widgets = widget_inputs(NODE_CLASS_MAPPINGS[kind])
        values = node.get("widgets_values", [])
        # a workflow saved before optional widgets were added lists fewer values: the frontend gives the values in
        # order and keeps the defaults of the rest (tests/integration/test_browser.py loads them)
        required = len(widget_inputs(NODE_CLASS_MAPPINGS[kind], ("required",)))
        assert required <= len(values) <= len(widgets), f"{kind}: {len(values)} widget values for {[w[0] for w in widgets]}"
        for (name, declaration), value in zip(widgets, values):
            declared = declaration[0]
            if isinstance(declared, list):
                assert value in declared, f"{kind}.{name} = {value!r} is not one of {declared}"
            elif declared in ("INT", "FLOAT"):
                assert declaration[1]["min"] <= value <= declaration[1]["max"], f"{kind}.{name} out of range"
            elif declared == "BOOLEAN":
                assert isinstance(value, bool)


def check_links(nodes, links):
    """links: (id, source, source_slot, target, target_slot, type). Both ends agree with the link, and with our
    nodes' RETURN_TYPES and INPUT_TYPES; an end that is not a node of `nodes` (a subgraph's input or output,
    ids -10 and -20) is left to the caller."""
    for link_id, source, source_slot, target, target_slot, link_type in links:
        if source in nodes:
            source_node = nodes[source]
            assert source_node["outputs"][source_slot]["type"] == link_type
            assert link_id in source_node["outputs"][source_slot]["links"]
            if source_node["type"] in NODE_CLASS_MAPPINGS:
                assert NODE_CLASS_MAPPINGS[source_node["type"]].RETURN_TYPES[source_slot] == link_type
        if target in nodes:
            target_node = nodes[target]
            assert target_node["inputs"][target_slot]["link"] == link_id
            if target_node["type"] in NODE_CLASS_MAPPINGS:
                cls = NODE_CLASS_MAPPINGS[target_node["type"]]
                spec = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
                input_name = target_node["inputs"][target_slot]["name"]
                takes = spec[input_name][0]
                assert takes == link_type, f"{target_node['type']}.{input_name} takes {takes}"


TITLE = 30  # the node's title bar, drawn above its position


def _box(node):
    (x, y), (width, height) = node["pos"], node["size"]
    return x, y - TITLE, x + width, y + height


def check_no_overlap(nodes):
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = _box(a), _box(b)
            assert not (ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1), (a["id"], a["type"], b["id"], b["type"])
