"""Every node keeps ComfyUI's classic contract, and what FUNCTION returns matches RETURN_TYPES."""

import os

import numpy as np
import pytest
import torch
from fer_network import write_tiny_network
from genaffect import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from genaffect.models.expression.batch import ExpressionBatch
from genaffect.models.expression.expression_estimator import ExpressionEstimator
from genaffect.models.expression.expression_mapping import ExpressionMapping
from genaffect.models.expression.expression_network import ExpressionNetwork
from genaffect.models.face.face_analyzer import FaceAnalyzer
from genaffect.models.face.face_crops import FaceCrops
from genaffect.models.face.face_listing import FaceListing
from genaffect.models.face.identity import Identity
from genaffect.models.evaluation.guard_report import SheetJob
from genaffect.models.generation.dit_adapter import DiTAdapter, DiTAdapterConfig
from genaffect.nodes import comfy_host
from genaffect.nodes.sampling.guard import SamplingGuard
from tiny_insightface import faces_image, to_image_tensor

CATEGORIES = {"GenAffect/face", "GenAffect/expression", "GenAffect/sampling", "GenAffect/evaluate"}
CORE_TYPES = {"IMAGE", "MASK", "MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "STRING", "INT", "FLOAT", "BOOLEAN",
              "FACE_LANDMARKS"}  # core's MediaPipe Face Landmarker (ComfyUI 0.33)
# What a value of each socket type is, for checking real outputs.
TYPE_CHECKS = {
    "IMAGE": lambda v: isinstance(v, torch.Tensor) and v.ndim == 4 and v.shape[-1] == 3 and v.dtype == torch.float32,
    "MASK": lambda v: isinstance(v, torch.Tensor) and v.ndim == 3 and v.dtype == torch.float32,
    "STRING": lambda v: isinstance(v, str),
    "INT": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "GA_FACE_ANALYZER": lambda v: isinstance(v, FaceAnalyzer),
    "GA_IDENTITY": lambda v: isinstance(v, Identity),
    "GA_EXPRESSION": lambda v: isinstance(v, ExpressionBatch),
    "GA_EXPRESSION_ESTIMATOR": lambda v: isinstance(v, ExpressionEstimator),
    "GA_EXPRESSION_MAPPING": lambda v: isinstance(v, ExpressionMapping),
    "GA_EXPRESSION_NETWORK": lambda v: isinstance(v, ExpressionNetwork),
    "GA_DIT_ADAPTER": lambda v: isinstance(v, DiTAdapter),
    "GA_SAMPLING_GUARD": lambda v: isinstance(v, SamplingGuard),
    "GA_SHEET_JOB": lambda v: isinstance(v, SheetJob),
    "GA_FACES": lambda v: isinstance(v, FaceListing),
    "GA_FACE_CROPS": lambda v: isinstance(v, FaceCrops),
    "FLOAT": lambda v: isinstance(v, float),
    "CONDITIONING": lambda v: isinstance(v, list) and all(isinstance(part[0], torch.Tensor) and isinstance(part[1], dict)
                                                          for part in v),
}
NODES = sorted(NODE_CLASS_MAPPINGS.items())
# Nodes that take a ComfyUI MODEL run in the integration lane (tests/integration), against a real ComfyUI.
NEEDS_COMFYUI = {"GenAffectConsistentAttention", "GenAffectConsistentBatchSampler", "GenAffectArc2FaceLoader",
                 "GenAffectArc2FaceConditioning", "GenAffectApplyExpressionAdapter", "GenAffectApplyReferenceAdapter",
                 "GenAffectApplyDiTAdapter", "GenAffectDiTSampler"}


@pytest.mark.parametrize("name, cls", NODES)
def test_node_declares_the_classic_contract(name, cls):
    assert name.startswith("GenAffect") and name in NODE_DISPLAY_NAME_MAPPINGS
    assert cls.CATEGORY in CATEGORIES
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls, cls.FUNCTION))
    assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
    assert len(getattr(cls, "OUTPUT_TOOLTIPS", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    for socket in cls.RETURN_TYPES:
        assert socket in CORE_TYPES or socket.startswith("GA_"), socket


@pytest.mark.parametrize("name, cls", NODES)
def test_every_input_is_well_formed_and_has_a_tooltip(name, cls, models_dir):
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and "required" in spec
    for section in ("required", "optional"):
        for input_name, declaration in spec.get(section, {}).items():
            assert isinstance(declaration, tuple) and 1 <= len(declaration) <= 2, input_name
            kind = declaration[0]
            assert isinstance(kind, list) and kind or kind in CORE_TYPES or kind.startswith("GA_"), input_name
            options = declaration[1] if len(declaration) == 2 else {}
            assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
            if isinstance(kind, str) and kind in ("INT", "FLOAT"):
                assert options["min"] <= options["default"] <= options["max"], input_name


def _run_every_node():
    """One real call per node, in graph order, with tiny models and painted faces."""
    loader = NODE_CLASS_MAPPINGS["GenAffectFaceAnalyzerLoader"]()
    analyzer_outputs = loader.load("antelopev2", "pack default", "CPU", 256, 0.5)
    images = to_image_tensor(faces_image(dict(cx=128, cy=128)), faces_image(dict(cx=96, cy=96, half=56)))
    extract = NODE_CLASS_MAPPINGS["GenAffectExtractIdentity"]()
    check = NODE_CLASS_MAPPINGS["GenAffectCheckModels"]()
    preset = NODE_CLASS_MAPPINGS["GenAffectExpressionPreset"]().build("happy, sad", 1.0)
    estimator = NODE_CLASS_MAPPINGS["GenAffectExpressionEstimatorLoader"]().load("face_landmarker.task", "SMIRK_em1.pt", 4, 0.5)
    estimated = NODE_CLASS_MAPPINGS["GenAffectEstimateExpression"]().estimate(images, "largest", 0, "skip", estimator=estimator[0])
    frames = ExpressionBatch([str(i) for i in range(12)], blendshapes=np.random.default_rng(0).random((12, 52)),
                             flame=np.random.default_rng(1).random((12, 55)))
    fitted = NODE_CLASS_MAPPINGS["GenAffectFitExpressionMapping"]().fit(frames, 0.01, 0.2, "")
    identity = extract.extract(analyzer_outputs[0], images, "largest", 0, "skip")
    DiTAdapter(DiTAdapterConfig(family="flux", hidden_size=32, double_blocks=2, single_blocks=4, token_width=32,
                                heads=2, head_dim=8, resampler_depth=1)).save(
        os.path.join(comfy_host.models_dir(), "genaffect", "tiny_dit_adapter.safetensors"))
    networks = os.path.join(comfy_host.models_dir(), "expression_networks")
    os.makedirs(networks, exist_ok=True)
    write_tiny_network(os.path.join(networks, "tiny_network.onnx"))
    network = NODE_CLASS_MAPPINGS["GenAffectExpressionNetworkLoader"]().load("tiny_network.onnx", "CPU")
    metrics = NODE_CLASS_MAPPINGS["GenAffectFaceMetrics"]().measure(images, analyzer_outputs[0], identity[0], preset[0],
                                                                    estimator[0], expression_network=network[0])
    from PIL import Image

    Image.fromarray(faces_image(dict(cx=128, cy=128))).save(os.path.join(os.environ["GENAFFECT_INPUT_DIR"], "ann.png"))
    job = NODE_CLASS_MAPPINGS["GenAffectSheetJob"]().load("job-1", "ann", "ann.png", "happy, sad", 7)
    group = to_image_tensor(faces_image(dict(cx=64, cy=128, half=24, identity=1), dict(cx=192, cy=128, half=24, identity=2)))
    found = NODE_CLASS_MAPPINGS["GenAffectFindFaces"]().find(analyzer_outputs[0], group, "left to right", "all", "skip",
                                                             estimator=estimator[0])
    cropped = NODE_CLASS_MAPPINGS["GenAffectCropFaces"]().crop(group, found[0], preset[0], "one expression per face",
                                                               "upright", 128, 2.2, 1.3, 0.3)
    return {
        "GenAffectSheetJob": job,
        "GenAffectSaveSheetJob": NODE_CLASS_MAPPINGS["GenAffectSaveSheetJob"]().save(
            images, job[3], '{"schema": "genaffect.guard_report", "version": 1, "guarded": false, "seed": 7, '
                            '"summary": "no guard"}', "jobs/sheet"),
        "GenAffectFindFaces": found,
        "GenAffectCropFaces": cropped,
        "GenAffectStitchFaces": NODE_CLASS_MAPPINGS["GenAffectStitchFaces"]().stitch(group, cropped[0], cropped[4]),
        "GenAffectExpressionTrack": NODE_CLASS_MAPPINGS["GenAffectExpressionTrack"]().track(
            images, 25.0, analyzer_outputs[0], estimator[0], 1.5, 0.5, True, 1, 1.0),
        "GenAffectFaceAnalyzerLoader": analyzer_outputs,
        "GenAffectExtractIdentity": identity,
        "GenAffectAlignFace": NODE_CLASS_MAPPINGS["GenAffectAlignFace"]().align(
            analyzer_outputs[0], images, 128, "largest", 0, "skip"),
        "GenAffectCheckModels": check.check(False),
        "GenAffectExpressionPreset": preset,
        "GenAffectExpressionEditor": NODE_CLASS_MAPPINGS["GenAffectExpressionEditor"]().edit(1.0, preset[0], smile_left=0.5),
        "GenAffectExpressionInterpolate": NODE_CLASS_MAPPINGS["GenAffectExpressionInterpolate"]().interpolate(
            preset[0], preset[0], 3, "linear"),
        "GenAffectExpressionMix": NODE_CLASS_MAPPINGS["GenAffectExpressionMix"]().mix(preset[0], "1, 3"),
        "GenAffectHeadTurns": NODE_CLASS_MAPPINGS["GenAffectHeadTurns"]().turn("straight, yaw 20", preset[0]),
        "GenAffectExpressionToPrompt": NODE_CLASS_MAPPINGS["GenAffectExpressionToPrompt"]().describe(preset[0], "a", ""),
        "GenAffectDrawExpressions": NODE_CLASS_MAPPINGS["GenAffectDrawExpressions"]().draw(preset[0], 64, 0, True, "t"),
        "GenAffectConditioningIntensity": NODE_CLASS_MAPPINGS["GenAffectConditioningIntensity"]().blend(
            [[[torch.zeros(1, 4, 8), {}]]], [[[torch.ones(1, 4, 8), {}]], [[torch.ones(1, 6, 8), {}]]], [preset[0]],
            [NODE_CLASS_MAPPINGS["GenAffectExpressionPreset"]().build("happy, sad", 0.5)[0]], [1.5]),
        "GenAffectExpressionEstimatorLoader": estimator,
        "GenAffectEstimateExpression": estimated,
        "GenAffectWarpExpression": NODE_CLASS_MAPPINGS["GenAffectWarpExpression"]().warp(
            images, preset[0], 1.0, 5.0, 0.0, 0.0, 0.2, 0.0, "largest", 0, "skip", estimator=estimator[0]),
        "GenAffectFitExpressionMapping": fitted,
        "GenAffectApplyExpressionMapping": NODE_CLASS_MAPPINGS["GenAffectApplyExpressionMapping"]().apply(
            preset[0], "(the mapping input)", False, fitted["result"][0]),
        "GenAffectExpressionNetworkLoader": network,
        "GenAffectFaceMetrics": metrics,
        "GenAffectScoreExpressions": NODE_CLASS_MAPPINGS["GenAffectScoreExpressions"]().score(
            images, "happy, fear", analyzer_outputs[0], identity[0], estimator[0], estimated[0], None, network[0]),
        "GenAffectDiTAdapterLoader": NODE_CLASS_MAPPINGS["GenAffectDiTAdapterLoader"]().load(
            "tiny_dit_adapter.safetensors"),
        "GenAffectSelectBest": NODE_CLASS_MAPPINGS["GenAffectSelectBest"]().select(
            images, 1, analyzer_outputs[0], identity[0], preset[0], estimator[0]),
        "GenAffectSamplingGuard": NODE_CLASS_MAPPINGS["GenAffectSamplingGuard"]().build(
            object(), analyzer_outputs[0], identity[0], 2, 1, 0.4, 1.0, preset[0], estimator[0]),  # object(): a VAE
        "GenAffectExpressionSheet": NODE_CLASS_MAPPINGS["GenAffectExpressionSheet"]().build(
            images, 0, "sheet", "", preset[0], metrics["result"][0]),
    }


def test_function_outputs_match_return_types(tiny_pack, expression_models, tmp_path, monkeypatch):
    for folder in ("input", "output"):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(f"GENAFFECT_{folder.upper()}_DIR", str(tmp_path / folder))
    outputs = _run_every_node()
    assert set(outputs) | NEEDS_COMFYUI == set(NODE_CLASS_MAPPINGS), "add a call for the new node to _run_every_node"
    for name, result in outputs.items():
        cls = NODE_CLASS_MAPPINGS[name]
        if isinstance(result, dict):  # output nodes may also return {"ui": ..., "result": ...}
            result = result["result"]
        assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES), name
        is_list = getattr(cls, "OUTPUT_IS_LIST", (False,) * len(result))
        for socket, value, listed in zip(cls.RETURN_TYPES, result, is_list):
            for item in value if listed else [value]:
                assert TYPE_CHECKS[socket](item), f"{name} output {socket} is {type(item).__name__}"
