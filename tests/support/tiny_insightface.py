"""Tiny ONNX models with the real insightface signatures, and painted "faces" they respond to.

They prove the plumbing (router, SCRFD decoding, NMS, alignment, embedding, our code), not accuracy.

Detector (SCRFD layout, 9 outputs: scores/boxes/keypoints at strides 8, 16, 32, two anchors): at
stride 8 a cell fires when its 8x8 window centred on the anchor is saturated red (R - B high) and the 24x24
window around it is not mostly red (a marker scaled up more than about 2x is missed, like a close-up). The
box half-size grows with the window's green level (16..64 px); the 5 keypoints sit where ArcFace's
template puts them inside that box, so alignment maps the box onto the 112x112 crop. Blue lowers
the score. Strides 16 and 32 never fire.

Recognizer (112x112 -> 512): 8x8 average pooling, centring, and a fixed random projection, so
aligned crops of the same painted texture give near-identical embeddings and different textures
near-orthogonal ones.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
# Keypoint offsets in units of the box half-size: the template relative to the crop centre.
KEYPOINT_OFFSETS = (ARCFACE_TEMPLATE - 56.0) / 56.0
MIN_HALF, MAX_HALF = 16.0, 64.0  # box half-size range in pixels at stride 8
# The (R - B) level of the 3x-stride window around an anchor above which the marker counts as too big: an 8-pixel
# marker fills 1/9 of it (0.22); scaled up more than about 2x (a 256-pixel close-up at detection size 640) it
# fills over half, and the detector misses it, as SCRFD misses a face far larger than its anchors.
WIDE_REDNESS = 1.0
OPSET = 13


def _const(name: str, array) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(np.asarray(array), name))


def _cost_branch(prefix: str, source: str, layers: list[tuple[int, int, int]], weight_seed: int = 0) -> tuple[list, str]:
    """Convolutions whose result is multiplied by zero: real-model compute with no effect on outputs.

    ``layers`` are (in_channels, out_channels, stride). Used by the benchmark, so that timing ratios
    reflect detector/recognizer work of realistic size rather than Python overhead.
    """
    rng = np.random.default_rng(weight_seed)
    nodes, current = [], source
    for i, (cin, cout, stride) in enumerate(layers):
        weight = (rng.standard_normal((cout, cin, 3, 3)) * 0.01).astype(np.float32)
        nodes += [
            _const(f"{prefix}w{i}", weight),
            helper.make_node("Conv", [current, f"{prefix}w{i}"], [f"{prefix}c{i}"], name=f"{prefix}conv{i}",
                             kernel_shape=[3, 3], strides=[stride, stride], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"{prefix}c{i}"], [f"{prefix}r{i}"], name=f"{prefix}relu{i}"),
        ]
        current = f"{prefix}r{i}"
    nodes += [
        helper.make_node("ReduceMean", [current], [f"{prefix}mean"], name=f"{prefix}mean", axes=[1, 2, 3], keepdims=1),
        _const(f"{prefix}zero", np.array(0.0, dtype=np.float32)),
        helper.make_node("Mul", [f"{prefix}mean", f"{prefix}zero"], [f"{prefix}out"], name=f"{prefix}times_zero"),
    ]
    return nodes, f"{prefix}out"

# About SCRFD-10G at 640x640 (~10 GFLOPs) and glintr100 at 112x112 (~24 GFLOPs).
DETECTOR_COST = [(3, 32, 2), (32, 64, 1), (64, 64, 1)]
RECOGNIZER_COST = [(3, 64, 2), (64, 256, 1)] + [(256, 256, 1)] * 5


def _stride_branch(stride: int, fires: bool) -> tuple[list, list[str]]:
    """Nodes computing (scores, boxes, keypoints) for one stride; returns nodes and output names."""
    s = stride
    half_lo, half_hi = s // 2, s // 2 - 1
    p = f"s{s}_"
    nodes = [
        helper.make_node("AveragePool", ["input.1"], [p + "pool"], name=p + "pool", kernel_shape=[s, s],
                         strides=[s, s], pads=[half_lo, half_lo, half_hi, half_hi], count_include_pad=0),
        _const(p + "r_idx", np.array([0], dtype=np.int64)),
        _const(p + "g_idx", np.array([1], dtype=np.int64)),
        _const(p + "b_idx", np.array([2], dtype=np.int64)),
        helper.make_node("Gather", [p + "pool", p + "r_idx"], [p + "r"], name=p + "gather_r", axis=1),
        helper.make_node("Gather", [p + "pool", p + "g_idx"], [p + "g"], name=p + "gather_g", axis=1),
        helper.make_node("Gather", [p + "pool", p + "b_idx"], [p + "b"], name=p + "gather_b", axis=1),
        helper.make_node("Sub", [p + "r", p + "b"], [p + "redness"], name=p + "redness"),
        _const(p + "gain", np.array(10.0 if fires else 0.0, dtype=np.float32)),
        _const(p + "offset", np.array(-15.0 if fires else -20.0, dtype=np.float32)),
        helper.make_node("Mul", [p + "redness", p + "gain"], [p + "logit0"], name=p + "logit_scale"),
        helper.make_node("Add", [p + "logit0", p + "offset"], [p + "logit_raw"], name=p + "logit_shift"),
        # a marker much larger than the stride is no face: like SCRFD's biggest anchors, the detector misses a face
        # scaled up far beyond them (a close-up upscaled to the detection size)
        helper.make_node("AveragePool", ["input.1"], [p + "wide"], name=p + "wide_pool", kernel_shape=[3 * s, 3 * s],
                         strides=[s, s], pads=[3 * s // 2, 3 * s // 2, 3 * s // 2 - 1, 3 * s // 2 - 1],
                         count_include_pad=0),
        helper.make_node("Gather", [p + "wide", p + "r_idx"], [p + "wide_r"], name=p + "gather_wide_r", axis=1),
        helper.make_node("Gather", [p + "wide", p + "b_idx"], [p + "wide_b"], name=p + "gather_wide_b", axis=1),
        helper.make_node("Sub", [p + "wide_r", p + "wide_b"], [p + "wide_redness"], name=p + "wide_redness"),
        _const(p + "too_big", np.array(WIDE_REDNESS, dtype=np.float32)),
        helper.make_node("Sub", [p + "wide_redness", p + "too_big"], [p + "excess0"], name=p + "excess0"),
        helper.make_node("Relu", [p + "excess0"], [p + "excess"], name=p + "excess"),
        _const(p + "penalty_gain", np.array(-40.0, dtype=np.float32)),
        helper.make_node("Mul", [p + "excess", p + "penalty_gain"], [p + "penalty"], name=p + "penalty"),
        helper.make_node("Add", [p + "logit_raw", p + "penalty"], [p + "logit"], name=p + "logit"),
        helper.make_node("Sigmoid", [p + "logit"], [p + "score_map"], name=p + "sigmoid"),
        # half-size in stride units: d = lo + (hi - lo) * (g + 1) / 2, with g in [-1, 1]
        _const(p + "d_scale", np.array((MAX_HALF - MIN_HALF) / 8.0 / 2.0, dtype=np.float32)),
        _const(p + "d_shift", np.array(MIN_HALF / 8.0 + (MAX_HALF - MIN_HALF) / 8.0 / 2.0, dtype=np.float32)),
        helper.make_node("Mul", [p + "g", p + "d_scale"], [p + "d0"], name=p + "d_scale_mul"),
        helper.make_node("Add", [p + "d0", p + "d_shift"], [p + "d_map"], name=p + "d_shift_add"),
        _const(p + "col", np.array([-1, 1], dtype=np.int64)),
        helper.make_node("Reshape", [p + "score_map", p + "col"], [p + "score_col"], name=p + "score_col"),
        helper.make_node("Reshape", [p + "d_map", p + "col"], [p + "d_col"], name=p + "d_col"),
        # two anchors per position, consecutive (SCRFD stacks anchor centres that way)
        helper.make_node("Concat", [p + "score_col", p + "score_col"], [p + "score2"], name=p + "score2", axis=1),
        helper.make_node("Reshape", [p + "score2", p + "col"], [f"score_{s}"], name=p + "score_out"),
        helper.make_node("Concat", [p + "d_col"] * 8, [p + "box2"], name=p + "box2", axis=1),
        _const(p + "box_shape", np.array([-1, 4], dtype=np.int64)),
        helper.make_node("Reshape", [p + "box2", p + "box_shape"], [f"bbox_{s}"], name=p + "box_out"),
        _const(p + "kps_offsets", KEYPOINT_OFFSETS.reshape(1, 10)),
        helper.make_node("Mul", [p + "d_col", p + "kps_offsets"], [p + "kps1"], name=p + "kps_mul"),
        helper.make_node("Concat", [p + "kps1", p + "kps1"], [p + "kps2"], name=p + "kps2", axis=1),
        _const(p + "kps_shape", np.array([-1, 10], dtype=np.int64)),
        helper.make_node("Reshape", [p + "kps2", p + "kps_shape"], [f"kps_{s}"], name=p + "kps_out"),
    ]
    return nodes, [f"score_{s}", f"bbox_{s}", f"kps_{s}"]


def tiny_detector(realistic_cost: bool = False) -> onnx.ModelProto:
    nodes, outputs = [], {"score": [], "bbox": [], "kps": []}
    if realistic_cost:
        cost_nodes, cost = _cost_branch("det_cost_", "input.1", DETECTOR_COST)
        nodes += cost_nodes
    for stride in (8, 16, 32):
        branch, (score, bbox, kps) = _stride_branch(stride, fires=stride == 8)
        if realistic_cost and stride == 8:  # feed the zero-valued cost into the stride-8 logit
            sigmoid = next(i for i, node in enumerate(branch) if node.name == "s8_sigmoid")
            branch[sigmoid].input[0] = "s8_logit_with_cost"
            branch.insert(sigmoid, helper.make_node("Add", ["s8_logit", cost], ["s8_logit_with_cost"], name="s8_add_cost"))
        nodes += branch
        outputs["score"].append(score)
        outputs["bbox"].append(bbox)
        outputs["kps"].append(kps)
    widths = {"score": 1, "bbox": 4, "kps": 10}
    graph_outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n_{name}", widths[kind]])
        for kind in ("score", "bbox", "kps")
        for name in outputs[kind]
    ]
    graph = helper.make_graph(
        nodes, "tiny_scrfd", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        graph_outputs,
    )
    return _finish(graph)


def tiny_recognizer(seed: int = 0, embedding_size: int = 512, realistic_cost: bool = False) -> onnx.ModelProto:
    projection = np.random.default_rng(seed).standard_normal((3 * 14 * 14, embedding_size)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["data"], ["pooled"], name="pool", kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("ReduceMean", ["flat"], ["flat_mean"], name="centre_mean", axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "flat_mean"], ["centred"], name="centre"),
        _const("projection", projection),
        helper.make_node("MatMul", ["centred", "projection"], ["fc1" if not realistic_cost else "fc0"], name="project"),
    ]
    if realistic_cost:
        cost_nodes, cost = _cost_branch("rec_cost_", "data", RECOGNIZER_COST)
        nodes += cost_nodes + [
            _const("cost_shape", np.array([-1, 1], dtype=np.int64)),
            helper.make_node("Reshape", [cost, "cost_shape"], ["cost_col"], name="cost_col"),
            helper.make_node("Add", ["fc0", "cost_col"], ["fc1"], name="add_cost"),
        ]
    graph = helper.make_graph(
        nodes, "tiny_arcface", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["batch", embedding_size])],
    )
    return _finish(graph)


def tiny_landmarker() -> onnx.ModelProto:
    """A 192x192-input model: the router files it as a landmark model (packs hold those too)."""
    nodes = [helper.make_node("GlobalAveragePool", ["data"], ["pooled"], name="gap"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
             _const("spread", np.ones((3, 212), dtype=np.float32)),
             helper.make_node("MatMul", ["flat", "spread"], ["fc1"], name="spread")]
    graph = helper.make_graph(  # 212 outputs = 106 2-D points, like 2d106det.onnx
        nodes, "tiny_landmark", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 212])],
    )
    return _finish(graph)


def _finish(graph) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_pack(
    insightface_root: str,
    pack: str = "antelopev2",
    *,
    detector_name: str = "scrfd_10g_bnkps.onnx",
    recognizer_name: str | None = "glintr100.onnx",
    recognizer_seed: int = 0,
    with_landmarker: bool = True,
    realistic_cost: bool = False,
) -> str:
    """Write a tiny pack to ``<insightface_root>/models/<pack>/``; returns that folder."""
    folder = os.path.join(insightface_root, "models", pack)
    os.makedirs(folder, exist_ok=True)
    onnx.save(tiny_detector(realistic_cost), os.path.join(folder, detector_name))
    if recognizer_name:
        onnx.save(tiny_recognizer(recognizer_seed, realistic_cost=realistic_cost), os.path.join(folder, recognizer_name))
    if with_landmarker:
        onnx.save(tiny_landmarker(), os.path.join(folder, "2d106det.onnx"))
    return folder


# ---- painting faces the tiny detector finds ---------------------------------------------------


def green_for_half_size(half: float) -> int:
    """Green level of the marker that makes the detector report a box of this half-size (pixels)."""
    fraction = (half - MIN_HALF) / (MAX_HALF - MIN_HALF)
    g_norm = 2.0 * fraction - 1.0
    return int(np.clip(round(g_norm * 128.0 + 127.5), 0, 255))


def paint_face(image: np.ndarray, cx: int, cy: int, half: float = 40.0, identity: int = 0, blue: int = 0,
               photo: int = 0) -> None:
    """Paint, in place on an RGB uint8 image, a face the tiny detector finds at (cx, cy).

    ``cx``/``cy`` must be multiples of 8 (anchor centres) in detector-input pixels; ``identity``
    seeds the texture the recognizer sees; ``photo`` > 0 makes another photo of the same person (the texture
    shifted a little: the recognizer scores it about 0.8 to photo 0, not the 1.0 of a copy); ``blue`` > 0 lowers
    the detection score.
    """
    assert cx % 8 == 0 and cy % 8 == 0, "faces sit on stride-8 anchor centres"
    texture = np.random.default_rng(1000 + identity).integers(20, 200, size=(8, 8, 3))
    if photo:
        texture = np.clip(texture + np.random.default_rng(7000 + 31 * identity + photo).integers(-60, 61, (8, 8, 3)),
                          20, 199)
    texture[..., 0] = np.minimum(texture[..., 0], texture[..., 2])  # R <= B: never looks like a marker
    size = int(round(2 * half))
    cells = np.kron(texture, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size].astype(np.uint8)
    top, left = cy - size // 2, cx - size // 2
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, image.shape[0]), min(left + size, image.shape[1])
    image[y0:y1, x0:x1] = cells[y0 - top : y1 - top, x0 - left : x1 - left]
    image[cy - 4 : cy + 4, cx - 4 : cx + 4] = (255, green_for_half_size(half), blue)


def blank_image(height: int = 256, width: int = 256, value: int = 128) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


def faces_image(*faces, height=256, width=256):
    """A grey RGB image with painted faces: each face is a dict of paint_face keyword arguments."""
    image = blank_image(height, width)
    for face in faces:
        paint_face(image, **face)
    return image


def to_image_tensor(*frames):
    import torch

    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)
