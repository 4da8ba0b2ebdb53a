"""The pixel judge: a downloaded expression-recognition network (ONNX, on ONNX Runtime) that reads a face crop,
as an opinion independent of GenAffect's landmark classifier (``models/evaluation/expression_judge.py``).

Any such network is described by a model card (``models/data/expression_networks.json``, or the key
``genaffect.model_card`` in the ONNX file's own metadata): the input tensor (name, layout, size, grey / RGB /
BGR, per-channel mean and std in 0..255 units), the crop (``align5``: the detector's 5 keypoints warped onto a
template - for ``arcface_112`` exactly the identity crop, with the photo's edge replicated where a close-up
ends; ``box``: a square of the detector box's longer side, or the box stretched, enlarged by ``margin``), the
output (name, logits or probabilities, an optional slice of a multi-task head) and its classes in GenAffect's
expression names. The card is checked against the graph when the file is loaded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import GenAffectInputError, ModelFileError
from ..files.onnx_providers import ProviderChoice, check_session_providers
from ..files.packaged_data import data_path

log = logging.getLogger(__name__)

CARD_KEY = "genaffect.model_card"
# The expression names a network's classes must be spelled in (the judge's and the presets' names).
EXPRESSION_CLASSES = ("neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted", "contempt")
# The ArcFace 112x112 template of the 5 keypoints (insightface's norm_crop): eyes, nose, mouth corners.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float32)
TEMPLATES = {"arcface_112": (ARCFACE_112, 112)}
COLOURS = ("grey", "rgb", "bgr")
LAYOUTS = ("NCHW", "NHWC")
SUMS_TO_ONE = 1e-3  # output rows this close to 1, all >= 0, are probabilities already (whatever the card says)


@lru_cache(maxsize=1)
def shipped_cards() -> dict[str, dict]:
    """The cards that ship with the pack, by file name."""
    with open(data_path("expression_networks.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    return {card["file"]: card for card in data["networks"]}


def default_network() -> str:
    with open(data_path("expression_networks.json"), encoding="utf-8") as handle:
        return json.load(handle)["default"]


def check_card(card: dict, where: str) -> dict:
    """The card, after checking every field the runner reads; a wrong card gets an error saying what is wrong."""
    def fail(what):
        raise ModelFileError(f"{where}: the expression network's model card {what}.")

    if not isinstance(card, dict):
        fail("is not a JSON object")
    for key in ("input", "crop", "output", "classes"):
        if not isinstance(card.get(key), (dict, list)):
            fail(f"has no '{key}'")
    spec, crop, output, classes = card["input"], card["crop"], card["output"], card["classes"]
    size = spec.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and 8 <= v <= 1024 for v in size)):
        fail(f"gives input size {size!r}; expected [height, width], each 8..1024")
    if spec.get("colour") not in COLOURS or spec.get("layout", "NCHW") not in LAYOUTS:
        fail(f"gives colour {spec.get('colour')!r} / layout {spec.get('layout')!r}; expected one of {COLOURS} / "
             f"{LAYOUTS}")
    channels = 1 if spec["colour"] == "grey" else 3
    for key in ("pixel_mean", "pixel_std"):
        values = spec.get(key)
        if not (isinstance(values, list) and len(values) in (1, channels)
                and all(isinstance(v, (int, float)) and np.isfinite(v) for v in values)):
            fail(f"gives {key} {values!r}; expected 1 or {channels} numbers")
    if any(v == 0 for v in spec["pixel_std"]):
        fail("divides by a pixel_std of 0")
    if crop.get("mode") == "align5":
        if crop.get("template", "arcface_112") not in TEMPLATES:
            fail(f"names crop template {crop.get('template')!r}; known: {sorted(TEMPLATES)}")
    elif crop.get("mode") == "box":
        if not 0.0 <= float(crop.get("margin", 0.0)) <= 2.0:
            fail(f"gives crop margin {crop.get('margin')!r}; expected 0..2 (the extra fraction of the box)")
    else:
        fail(f"gives crop mode {crop.get('mode')!r}; expected 'align5' or 'box'")
    if output.get("kind") not in ("logits", "probabilities"):
        fail(f"gives output kind {output.get('kind')!r}; expected 'logits' or 'probabilities'")
    take = output.get("take")
    if take is not None and not (isinstance(take, list) and len(take) == 2 and 0 <= take[0] < take[1]):
        fail(f"gives output take {take!r}; expected [first, end) of the output's columns")
    unknown = [c for c in classes if c not in EXPRESSION_CLASSES]
    if not classes or unknown or len(set(classes)) != len(classes):
        fail(f"names classes {classes}; each must appear once and be one of {list(EXPRESSION_CLASSES)} (map the "
             "authors' names, e.g. 'anger' -> 'angry', in the card)")
    return card


@dataclass(eq=False)
class ExpressionNetwork:
    """The GA_EXPRESSION_NETWORK socket: a loaded network and its card."""

    path: str
    card: dict
    session: object  # onnxruntime.InferenceSession
    card_source: str  # "the file's metadata" or "models/data/expression_networks.json"
    _normalised_output: bool | None = field(default=None, repr=False)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.card["classes"])

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def describe(self) -> str:
        spec, crop = self.card["input"], self.card["crop"]
        return (f"expression network {self.name} ({self.card.get('name', self.card.get('id', ''))}), card from "
                f"{self.card_source}: {len(self.classes)} classes ({', '.join(self.classes)}), input "
                f"{spec['size'][0]}x{spec['size'][1]} {spec['colour']}, crop {crop['mode']}, on "
                f"{', '.join(self.session.get_providers())}; licence: {self.card.get('licence', 'not stated')}")

    def crop(self, image_rgb: np.ndarray, box: np.ndarray, keypoints: np.ndarray | None) -> np.ndarray:
        """The network's input crop of one face, uint8 (H, W, C) in the card's colour order."""
        import cv2  # lazily, like insightface: a broken OpenCV then breaks this judge only

        spec, crop = self.card["input"], self.card["crop"]
        height, width = spec["size"]
        if spec["colour"] == "grey":
            image = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)  # ITU-R BT.601, as the FER networks were fed
        else:
            image = image_rgb if spec["colour"] == "rgb" else np.ascontiguousarray(image_rgb[..., ::-1])
        if crop["mode"] == "align5":
            if keypoints is None:
                raise GenAffectInputError(f"{self.name} needs the face's 5 keypoints (the face analyzer's detector).")
            points, side = TEMPLATES[crop.get("template", "arcface_112")]
            matrix = similarity_matrix(keypoints, points)
            # the photo's edge replicated, not black, where the template reaches past a close-up
            out = cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if (height, width) != (side, side):
                shrink = height < side
                out = cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        else:
            out = box_crop(image, box, float(crop.get("margin", 0.0)), bool(crop.get("square", True)), (height, width))
        return out[..., None] if out.ndim == 2 else out

    def probabilities(self, crops: list[np.ndarray]) -> np.ndarray:
        """(N, classes) probabilities of crops made by :meth:`crop`, in the card's class order."""
        spec, output = self.card["input"], self.card["output"]
        blob = (np.stack(crops).astype(np.float32) - np.asarray(spec["pixel_mean"], np.float32)) \
            / np.asarray(spec["pixel_std"], np.float32)
        if spec.get("layout", "NCHW") == "NCHW":
            blob = np.ascontiguousarray(blob.transpose(0, 3, 1, 2))
        scores = np.asarray(self.session.run([output["name"]], {spec["name"]: blob})[0], dtype=np.float64)
        scores = scores.reshape(len(crops), -1)
        if output.get("take"):
            scores = scores[:, output["take"][0]:output["take"][1]]
        if scores.shape[1] != len(self.classes):
            raise ModelFileError(f"{self.name} gives {scores.shape[1]} scores per face but its card names "
                                 f"{len(self.classes)} classes; the card does not describe this file.")
        normalised = bool(np.all(scores >= 0) and np.all(np.abs(scores.sum(axis=1) - 1) < SUMS_TO_ONE))
        if self._normalised_output is None and output["kind"] == "logits" and normalised:
            log.info("GenAffect: %s already gives probabilities (its card says logits); used as they are.", self.name)
        self._normalised_output = normalised
        if not normalised:
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        return scores.astype(np.float32)

    def classify(self, image_rgb: np.ndarray, box: np.ndarray, keypoints: np.ndarray | None) -> dict[str, float]:
        """One face's probabilities by expression name (classes the network lacks are absent, not zero)."""
        probabilities = self.probabilities([self.crop(image_rgb, box, keypoints)])[0]
        return {name: float(p) for name, p in zip(self.classes, probabilities)}


def similarity_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, translation) taking ``source`` points onto
    ``target``: the non-reflective solution insightface's norm_crop (skimage's SimilarityTransform) finds."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    count = len(source)
    system = np.zeros((2 * count, 4))
    system[:count] = np.c_[source[:, 0], -source[:, 1], np.ones(count), np.zeros(count)]
    system[count:] = np.c_[source[:, 1], source[:, 0], np.zeros(count), np.ones(count)]
    (p, q, tx, ty), *_ = np.linalg.lstsq(system, np.r_[target[:, 0], target[:, 1]], rcond=None)
    return np.array([[p, -q, tx], [q, p, ty]])


def box_crop(image: np.ndarray, box: np.ndarray, margin: float, square: bool, size: tuple[int, int]) -> np.ndarray:
    """The detector box around its centre, enlarged by ``margin`` (the total extra fraction of its side), made a
    square of its longer side or kept as it is (the resize then stretches it), the photo's edge replicated where
    it reaches past the photo, resized bilinearly to ``size`` (height, width)."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in box)
    box_width, box_height = (x2 - x1) * (1 + margin), (y2 - y1) * (1 + margin)
    if square:
        box_width = box_height = max(box_width, box_height)
    left, top = int(round((x1 + x2 - box_width) / 2)), int(round((y1 + y2 - box_height) / 2))
    crop_width, crop_height = max(int(round(box_width)), 1), max(int(round(box_height)), 1)
    pad = max(0, -left, -top, left + crop_width - image.shape[1], top + crop_height - image.shape[0])
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = image[top + pad:top + pad + crop_height, left + pad:left + pad + crop_width]
    return cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


_cache_lock = threading.Lock()
_cache: dict[tuple, ExpressionNetwork] = {}


def load_expression_network(path: str, provider_choice: ProviderChoice) -> ExpressionNetwork:
    """Load a network, its card from its own metadata or from the shipped cards (by file name), checked against
    the graph; cached by (file, size, time, providers)."""
    if not os.path.isfile(path):
        raise ModelFileError(f"expression network {path} not found.")
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, provider_choice.providers)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    import onnxruntime

    name = os.path.basename(path)
    shipped = shipped_cards().get(name)
    if shipped and shipped.get("bytes") and stat.st_size != shipped["bytes"]:
        raise ModelFileError(f"{name} is {stat.st_size:,} bytes but the published file is {shipped['bytes']:,}: an "
                             f"incomplete or different download. Download it again from {shipped['url']}.")
    try:
        session = onnxruntime.InferenceSession(path, providers=list(provider_choice.providers))
    except Exception as error:  # onnxruntime raises several unrelated types for a bad file
        raise ModelFileError(f"{path} ({stat.st_size:,} bytes) is not a readable ONNX model ({type(error).__name__}: "
                             f"{error}); download it again.") from error
    metadata = session.get_modelmeta().custom_metadata_map
    if CARD_KEY in metadata:
        try:
            card, source = json.loads(metadata[CARD_KEY]), "the file's metadata"
        except ValueError as error:
            raise ModelFileError(f"{name}: its {CARD_KEY} metadata is not JSON ({error}).") from error
    elif shipped is not None:
        card, source = shipped, "models/data/expression_networks.json"
    else:
        raise ModelFileError(
            f"{name} is not a known expression network: GenAffect needs its model card (input, crop, classes). Use one "
            f"of {sorted(shipped_cards())} (README, models), or a file carrying its card in its metadata "
            f"('{CARD_KEY}').")
    check_card(card, name)
    _check_graph(session, card, name)
    check_session_providers(provider_choice, name, list(session.get_providers()))
    network = ExpressionNetwork(path, card, session, source)
    with _cache_lock:
        _cache[key] = network
    return network


def _check_graph(session, card: dict, name: str) -> None:
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    spec = card["input"]
    if spec.get("name") not in inputs:
        raise ModelFileError(f"{name}: its card names input {spec.get('name')!r} but the graph takes {sorted(inputs)}.")
    if card["output"].get("name") not in outputs:
        raise ModelFileError(f"{name}: its card names output {card['output'].get('name')!r} but the graph gives "
                             f"{sorted(outputs)}.")
    shape = inputs[spec["name"]]
    channels = 1 if spec["colour"] == "grey" else 3
    expected = ([channels, *spec["size"]] if spec.get("layout", "NCHW") == "NCHW" else [*spec["size"], channels])
    declared = list(shape[1:]) if len(shape) == 4 else None
    if declared is None or any(isinstance(d, int) and d != e for d, e in zip(declared, expected)):
        raise ModelFileError(f"{name}: the graph's input {spec['name']} has shape {shape}; its card says "
                             f"[batch, {', '.join(map(str, expected))}].")


def release_networks() -> int:
    with _cache_lock:
        count = len(_cache)
        _cache.clear()
    return count
