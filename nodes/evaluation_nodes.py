"""Evaluation of a generated set and expression sheets (category GenAffect/evaluate)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np

from ..models.drawing.face_drawing import with_target_glyph
from ..models.drawing.pictures import draw_confusion_chart, draw_curves, draw_metrics_chart, draw_sheet
from ..models.errors import GenAffectInputError, ModelFileError
from ..models.evaluation import expression_score, face_metrics, select_best
from ..models.expression import expression_network
from ..models.expression.batch import BLENDSHAPE_NAMES, split_list
from ..models.expression.expression_library import estimator_space
from ..models.files import onnx_providers
from ..models.files.model_catalog import EXPRESSION_NETWORKS
from ..models.images import image_batch_to_rgb_uint8, rgb_uint8_to_image_batch
from . import comfy_host, sockets

log = logging.getLogger(__name__)

NETWORK_EXTENSIONS = (".onnx",)


class GenAffectExpressionNetworkLoader:
    DESCRIPTION = (
        "Loads an expression-recognition network (ONNX) from models/expression_networks/: the pixel judge, a second "
        "opinion beside GenAffect's landmark judge. Connect it to Face Metrics, Select Best or the Sampling Guard; "
        "they report what it reads on every face and whether the two judges agree. Known networks (their model "
        "cards ship with the pack): OpenCV Zoo's facial_expression_recognition_mobilefacenet_2022july.onnx "
        "(recommended, 4.8 MB, Apache-2.0), HSEmotion enet_b0_8_best_afew.onnx (with contempt), FER+ "
        "emotion-ferplus-8.onnx; see Check Models for the download links."
    )
    CATEGORY = "GenAffect/evaluate"
    FUNCTION = "load"
    RETURN_TYPES = (sockets.EXPRESSION_NETWORK, "STRING")
    RETURN_NAMES = ("expression_network", "info")
    OUTPUT_TOOLTIPS = ("The network and its model card.", "The file, its classes, crop and licence, and the providers "
                                                          "it runs on.")

    @classmethod
    def INPUT_TYPES(cls):
        files = comfy_host.list_model_files(EXPRESSION_NETWORKS, NETWORK_EXTENSIONS)
        default = expression_network.default_network()
        return {
            "required": {
                "network": (files if default in files else [default] + files, {
                    "tooltip": "An expression network in models/expression_networks/ (Check Models lists the known "
                               "ones with their download links)."}),
                "provider": (list(onnx_providers.PROVIDER_CHOICES), {
                    "tooltip": "Where ONNX Runtime runs it: auto (CUDA, else CoreML, else CPU), CUDA or CPU."}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, network, **_):
        return comfy_host.file_identity(comfy_host.model_file_path(EXPRESSION_NETWORKS, network, NETWORK_EXTENSIONS))

    def load(self, network, provider):
        path = comfy_host.model_file_path(EXPRESSION_NETWORKS, network, NETWORK_EXTENSIONS)
        if path is None:
            card = expression_network.shipped_cards().get(network)
            where = f"Download it from {card['url']}" if card else "Put the file"
            raise ModelFileError(f"{network} is not in models/{EXPRESSION_NETWORKS}/ "
                                 f"({', '.join(comfy_host.model_roots(EXPRESSION_NETWORKS))}). {where} into that "
                                 "folder, then press R in ComfyUI to refresh.")
        loaded = expression_network.load_expression_network(path, onnx_providers.choose_providers(provider))
        info = loaded.describe()
        log.info("GenAffect %s", info)
        return (loaded, info)


class GenAffectFaceMetrics:
    DESCRIPTION = (
        "Scores a generated set: ArcFace cosine of each face to the reference identity, the set's consistency "
        "(mean and minimum cosine over all pairs), copies of a reference photo, and, with a target expression, "
        "what the expression judge reads on each face (class probabilities, top class, the probability of the "
        "asked-for class; relative to the person's photo when reference_expression is connected), the pixel "
        "judge's second opinion when an expression network is connected, and the expression error (mean L1 over "
        "the re-estimated blendshapes; FLAME-55 L2 when SMIRK is loaded and the target has it). Close-ups the "
        "detector misses at first are retried with a border and a smaller detection size. Images without a face "
        "are reported, not fatal. Outputs JSON and a chart."
    )
    CATEGORY = "GenAffect/evaluate"
    FUNCTION = "measure"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE", "STRING", "IMAGE")
    RETURN_NAMES = ("metrics_json", "chart", "summary", "curves")
    OUTPUT_TOOLTIPS = (
        "Per image and for the set, as JSON (connect to Expression Sheet or save it).",
        "Bars per image: identity cosine and expression error.",
        "The set's numbers in words.",
        "Curves over the images (frames of an animation or video): for the blendshapes the targets move most, "
        "expected (solid) vs measured (dashed), the expression error and the identity cosine.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The generated set (a batch)."}),
                "face_analyzer": (sockets.FACE_ANALYZER, {
                    "tooltip": "From Face Analyzer Loader, with the same recognition as the reference identity."}),
                "identity": (sockets.IDENTITY, {"tooltip": "The reference identity (Extract Identity)."}),
            },
            "optional": {
                "target_expression": (sockets.EXPRESSION, {
                    "tooltip": "What each image should show: one per image, or one for all."}),
                "estimator": (sockets.EXPRESSION_ESTIMATOR, {
                    "tooltip": "Needed with a target (or face_landmarks): re-estimates each image's expression."}),
                "face_landmarks": ("FACE_LANDMARKS", {
                    "tooltip": "ComfyUI's MediaPipe Face Landmarker on the same images, instead of the estimator."}),
                "held_out_identity": (sockets.IDENTITY, {
                    "tooltip": "Other photos of the person, not used to condition (Extract Identity): how a new "
                               "photo of them compares; a set far nearer the reference than these was copied."}),
                "reference_expression": (sockets.EXPRESSION, {
                    "tooltip": "The reference photo's own expression (Estimate Expression on it): the judge then "
                               "reads each face relative to the person's photo (more accurate), flags faces that "
                               "show the photo's expression instead of their target ('expression copied') and "
                               "compares face shapes for the copy check."}),
                "expression_network": (sockets.EXPRESSION_NETWORK, {
                    "tooltip": "A pixel judge (Expression Network Loader): a second opinion on every face; its "
                               "reading and its agreement with the landmark judge are reported."}),
                "labels": ("STRING", {"default": "", "multiline": True,
                                      "tooltip": "One label per image (commas or new lines); empty: the target's "
                                                 "labels, or 'image 0', ..."}),
            },
        }

    def measure(self, images, face_analyzer, identity, target_expression=None, estimator=None, labels="",
                face_landmarks=None, held_out_identity=None, reference_expression=None, expression_network=None):
        frames = image_batch_to_rgb_uint8(images, what="Face Metrics images")
        names = split_list(labels)
        if not names and target_expression is not None and len(target_expression) == len(frames):
            names = list(target_expression.labels)
        on_progress = comfy_host.progress_callback(len(frames))

        metrics = face_metrics.measure(face_analyzer, identity, frames, names or None, target_expression, estimator,
                                       on_progress, core_landmarks=face_landmarks, held_out=held_out_identity,
                                       reference_expression=reference_expression,
                                       expression_network=expression_network)
        summary = metrics.summary()
        chart = draw_metrics_chart(
            summary.splitlines(),
            [m.label for m in metrics.images],
            [m.identity_cosine for m in metrics.images],
            [m.blendshape_l1 for m in metrics.images] if target_expression is not None else None,
        )
        log.info("GenAffect face metrics:\n%s", summary)
        curves = rgb_uint8_to_image_batch([metric_curves(metrics)])
        return {"ui": {"text": [summary]},
                "result": (metrics.to_json(), rgb_uint8_to_image_batch([chart]), summary, curves)}


CURVES = 4  # blendshapes followed on the curves chart


def metric_curves(metrics: face_metrics.SetMetrics) -> np.ndarray:
    """Expected vs measured over the images for the blendshapes whose targets move most (or are strongest, for one
    target), with the expression error and identity cosine; gaps where no face was found."""
    count = len(metrics.images)
    curves = []
    if metrics.expected is not None:
        spread = metrics.expected.std(axis=0) if count > 1 else np.zeros(metrics.expected.shape[1])
        order = np.argsort(-(spread if spread.max() > 1e-6 else metrics.expected.max(axis=0)))
        readable = set(estimator_space().readable_indices.tolist())
        chosen = [int(i) for i in order if int(i) in readable][:CURVES]
        for colour, column in enumerate(chosen):
            name = BLENDSHAPE_NAMES[column]
            curves += [(f"{name} expected", metrics.expected[:, column], colour, False),
                       (f"{name} measured", metrics.measured[:, column], colour, True)]
        errors = np.array([np.nan if m.blendshape_l1 is None else m.blendshape_l1 for m in metrics.images])
        curves.append(("expression error", errors, CURVES, False))
    cosines = np.array([np.nan if m.identity_cosine is None else m.identity_cosine for m in metrics.images])
    curves.append(("identity cosine", cosines, CURVES + 1, False))
    missing = [m.index for m in metrics.images if not m.face_found]
    return draw_curves(f"face metrics over {count} image(s)", curves, count, marks=missing)


class GenAffectExpressionSheet:
    DESCRIPTION = (
        "Lays a batch of faces out as one labelled grid (an expression sheet). Labels come from the text box, the "
        "expression, or are numbered; with metrics from Face Metrics each face also shows its identity cosine and "
        "expression error."
    )
    CATEGORY = "GenAffect/evaluate"
    FUNCTION = "build"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("sheet",)
    OUTPUT_TOOLTIPS = ("One image: the grid with captions.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The faces (a batch of equal-sized images)."}),
                "columns": ("INT", {"default": 0, "min": 0, "max": 64,
                                    "tooltip": "Faces per row; 0 picks a near-square grid."}),
                "title": ("STRING", {"default": "", "tooltip": "Optional text above the grid."}),
            },
            "optional": {
                "labels": ("STRING", {"default": "", "multiline": True,
                                      "tooltip": "One label per image (commas or new lines)."}),
                "expression": (sockets.EXPRESSION, {"tooltip": "Use these expressions' labels when labels is empty."}),
                "metrics_json": ("STRING", {"forceInput": True,
                                            "tooltip": "From Face Metrics: adds each face's scores to its caption."}),
                "target_faces": ("BOOLEAN", {"default": True, "tooltip": (
                    "With an expression connected: draw each image's asked-for expression (GenAffect's face model) "
                    "in its top-right corner.")}),
            },
        }

    def build(self, images, columns, title, labels="", expression=None, metrics_json=None, target_faces=True):
        frames = image_batch_to_rgb_uint8(images, what="Expression Sheet images")
        names = split_list(labels) or (list(expression.labels) if expression is not None else [])
        if names and len(names) != len(frames):
            source = "labels" if split_list(labels) else "expression labels"
            raise GenAffectInputError(f"{len(names)} {source} for {len(frames)} images; give one per image.")
        names = names or [str(i + 1) for i in range(len(frames))]
        captions = [[name] for name in names]
        if metrics_json:
            for caption, line in zip(captions, _metric_lines(metrics_json, len(frames))):
                caption.append(line)
        if target_faces and expression is not None and expression.blendshapes is not None:
            targets = expression.blendshapes
            if len(targets) not in (1, len(frames)):
                raise GenAffectInputError(f"{len(targets)} expressions for {len(frames)} images; give one per image "
                                          "or one for all, or turn target_faces off.")
            on_progress = comfy_host.progress_callback(len(frames))
            framed = []
            for i, frame in enumerate(frames):
                framed.append(with_target_glyph(frame, targets[i % len(targets)]))
                on_progress(i + 1, len(frames))
            frames = framed
        columns = columns or math.ceil(math.sqrt(len(frames)))
        return (rgb_uint8_to_image_batch([draw_sheet(frames, captions, columns, title)]),)


def _metric_lines(metrics_json: str, count: int) -> list[str]:
    not_metrics = GenAffectInputError("metrics_json is not the JSON output of GenAffect Face Metrics; connect that "
                                      "output here.")
    try:
        images = json.loads(metrics_json)["images"]
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise not_metrics from error
    if not isinstance(images, list) or not all(isinstance(image, dict) for image in images):
        raise not_metrics
    if len(images) != count:
        raise GenAffectInputError(f"the metrics describe {len(images)} images but the sheet has {count}; measure the same batch.")
    number = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)  # noqa: E731
    lines = []
    for index, image in enumerate(images):
        if not image.get("face_found"):
            lines.append("no face")
            continue
        similarity, error = image.get("identity_cosine"), image.get("blendshape_l1")
        if not number(similarity) or not (error is None or number(error)):
            raise GenAffectInputError(f"metrics_json image {index + 1} has identity_cosine {similarity!r} and "
                                      f"blendshape_l1 {error!r}; connect GenAffect Face Metrics' output unchanged.")
        lines.append(_metric_caption(similarity, image.get("copy_suspected"), error, image.get("expression_nearest"),
                                     image.get("expression_copied"), image.get("judge_top"),
                                     image.get("judge_probability")))
    return lines


CHOSEN = (90, 200, 120)  # the frame around a chosen candidate on the contact sheet


class GenAffectSelectBest:
    DESCRIPTION = (
        "Keeps the best of K candidates per expression: the images come in rounds (all N expressions, then all "
        "again, K times, e.g. K sampler runs with other seeds batched). Each is scored like Face Metrics and ranked "
        "identity first - a face that is not the person never wins - then not copied, then the expression judge "
        "reading the asked-for expression, its probability of it, the intensity distance to the target, the "
        "identity cosine and the earlier round. Outputs the N chosen images in order, a JSON report of every "
        "candidate with the verdict (which judge and number decided) and a contact sheet with the chosen ones "
        "framed."
    )
    CATEGORY = "GenAffect/evaluate"
    FUNCTION = "select"
    RETURN_TYPES = ("IMAGE", "STRING", "IMAGE")
    RETURN_NAMES = ("best", "report", "contact_sheet")
    OUTPUT_TOOLTIPS = ("The chosen candidate of each expression, in the targets' order.",
                       "Every candidate's scores and whether it was chosen, as JSON.",
                       "One row per expression, its candidates side by side, the chosen one framed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "K rounds of the N expressions, as one batch."}),
                "candidates": ("INT", {"default": 2, "min": 1, "max": 64,
                                       "tooltip": "K: how many rounds (candidates per expression) the batch holds."}),
                "face_analyzer": (sockets.FACE_ANALYZER, {"tooltip": "From Face Analyzer Loader."}),
                "identity": (sockets.IDENTITY, {"tooltip": "The reference identity (Extract Identity)."}),
                "target_expression": (sockets.EXPRESSION, {"tooltip": "The N expressions, one per image of a round."}),
            },
            "optional": {
                "estimator": (sockets.EXPRESSION_ESTIMATOR, {"tooltip": "Re-estimates each candidate's expression."}),
                "face_landmarks": ("FACE_LANDMARKS", {
                    "tooltip": "ComfyUI's MediaPipe Face Landmarker on the same images, instead of the estimator."}),
                "held_out_identity": (sockets.IDENTITY, {"tooltip": "Other photos of the person (see Face Metrics)."}),
                "reference_expression": (sockets.EXPRESSION, {
                    "tooltip": "The reference photo's own expression: the judge reads each candidate relative to "
                               "it, and a candidate showing it instead of its target loses (see Face Metrics)."}),
                "max_pose_error": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 90.0, "step": 0.5,
                                             "tooltip": "Largest head pose error (degrees, the worst of yaw, pitch and "
                                                        "roll) that passes: each candidate against the reference "
                                                        "photo's pose plus its target's head turn. Needs "
                                                        "reference_expression. 0: no limit."}),
                "expression_network": (sockets.EXPRESSION_NETWORK, {
                    "tooltip": "A pixel judge (Expression Network Loader): its reading is reported beside the "
                               "landmark judge's, and the choice follows both judges averaged (on three sources of real "
                               "photos of four they read expressions better than the landmark judge alone)."}),
            },
        }

    def select(self, images, candidates, face_analyzer, identity, target_expression, estimator=None,
               face_landmarks=None, held_out_identity=None, reference_expression=None, max_pose_error=0.0,
               expression_network=None):
        if max_pose_error > 0 and (reference_expression is None or reference_expression.head_pose is None):
            raise GenAffectInputError(
                "Select Best's max_pose_error compares each candidate's head pose with the reference photo's plus its "
                "target's head turn: connect reference_expression from Estimate Expression on the photo (it carries "
                "the photo's pose), or set max_pose_error to 0.")
        frames = image_batch_to_rgb_uint8(images, what="Select Best images")
        targets = select_best.candidate_targets(target_expression, len(frames), candidates)
        metrics = face_metrics.measure(face_analyzer, identity, frames, list(targets.labels), targets, estimator,
                                       comfy_host.progress_callback(len(frames)), core_landmarks=face_landmarks,
                                       held_out=held_out_identity, reference_expression=reference_expression,
                                       expression_network=expression_network)
        rule = select_best.PassRule(max_pose_error=max_pose_error or None)
        choices = select_best.choose(metrics, len(target_expression), candidates, rule)
        best = [frames[c.index] for c in sorted((c for c in choices if c.chosen), key=lambda c: c.expression)]
        report = json.dumps([{"expression": target_expression.labels[c.expression], "candidate": c.candidate + 1,
                              "index": c.index, "chosen": c.chosen, "verdict": c.verdict,
                              "failures": select_best.failures(c.metrics, rule), **dataclasses.asdict(c.metrics)}
                             for c in choices], indent=2)
        by_row = sorted(choices, key=lambda c: (c.expression, c.candidate))
        cells = [_framed(frames[c.index]) if c.chosen else frames[c.index] for c in by_row]
        captions = [[f"{target_expression.labels[c.expression]} #{c.candidate + 1}" + (" chosen" if c.chosen else ""),
                     _candidate_line(c.metrics)] for c in by_row]
        sheet = draw_sheet(cells, captions, candidates, "Select Best: one row per expression")
        return (rgb_uint8_to_image_batch(best), report, rgb_uint8_to_image_batch([sheet]))


class GenAffectScoreExpressions:
    DESCRIPTION = (
        "Scores a set of generated faces the way PixelSmile's FFE-Bench does: give each image its target (PixelSmile's "
        "12 categories, GenAffect's expression names or library presets); the expression judge reads every face and "
        "the node reports Acc-6 (the six basic categories), the accuracy over the categories the judge has (the "
        "others are listed, not counted), the identity similarity, the copy-paste score, the confusion between "
        "structurally close expressions (fear/surprise, anger/disgust, sadness/fear) and the confusion matrix, as "
        "JSON and a chart. The same scores for a folder: python -m models.score_expressions."
    )
    CATEGORY = "GenAffect/evaluate"
    FUNCTION = "score"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("score_json", "chart", "summary")
    OUTPUT_TOOLTIPS = ("The scores and the confusion matrix, as JSON.", "The summary over the confusion matrix.",
                       "The scores in words.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The generated faces (a batch)."}),
                "targets": ("STRING", {"default": "", "multiline": True, "tooltip": (
                    "Each image's target, in order (commas or new lines), e.g. 'happy, fear, disgust'; one name "
                    "for all images also works.")}),
                "face_analyzer": (sockets.FACE_ANALYZER, {"tooltip": "From Face Analyzer Loader."}),
                "identity": (sockets.IDENTITY, {"tooltip": "The person (Extract Identity on their photo)."}),
                "estimator": (sockets.EXPRESSION_ESTIMATOR, {"tooltip": "Reads each face's landmarks for the judge."}),
            },
            "optional": {
                "reference_expression": (sockets.EXPRESSION, {
                    "tooltip": "The person's photo's expression (Estimate Expression on it): the judge reads each face "
                               "relative to it (more accurate)."}),
                "held_out_identity": (sockets.IDENTITY, {
                    "tooltip": "Other photos of the person, not used to generate: adds the copy-paste gap."}),
                "expression_network": (sockets.EXPRESSION_NETWORK, {
                    "tooltip": "A pixel judge: its accuracy and agreement are added."}),
            },
        }

    def score(self, images, targets, face_analyzer, identity, estimator, reference_expression=None,
              held_out_identity=None, expression_network=None):
        frames = image_batch_to_rgb_uint8(images, what="Score Expressions images")
        names = split_list(targets)
        if len(names) == 1:
            names = names * len(frames)
        if len(names) != len(frames):
            raise GenAffectInputError(f"{len(names)} targets for {len(frames)} images; give one target per image, or "
                                      "one for all.")
        metrics = face_metrics.measure(face_analyzer, identity, frames, names, expression_score.target_batch(names),
                                       estimator, comfy_host.progress_callback(len(frames)),
                                       held_out=held_out_identity, reference_expression=reference_expression,
                                       expression_network=expression_network)
        result = expression_score.score(metrics, names)
        summary = result.summary()
        chart = draw_confusion_chart(summary.splitlines(), result.confusion)
        log.info("GenAffect expression score:\n%s", summary)
        return {"ui": {"text": [summary]}, "result": (result.to_json(), rgb_uint8_to_image_batch([chart]), summary)}


def _framed(image: np.ndarray, width: int = 6) -> np.ndarray:
    framed = image.copy()
    framed[:width], framed[-width:], framed[:, :width], framed[:, -width:] = CHOSEN, CHOSEN, CHOSEN, CHOSEN
    return framed


def _metric_caption(similarity: float, copied, error, nearest, expression_copied=None, judge_top=None,
                    judge_probability=None) -> str:
    """One sheet caption line: identity cosine (and the copy flag), what the judge reads (with the probability of
    the asked-for class) or the expression error (whether it is nearest its own target), and whether it shows the
    reference photo's expression instead."""
    parts = [f"ID {similarity:.2f}" + (" copied?" if copied else "")]
    if judge_top is not None:
        parts.append(judge_top + (f" p={judge_probability:.2f}" if judge_probability is not None else ""))
    elif error is not None:
        parts.append(f"expr {error:.3f}" + ("" if nearest is None else " ok" if nearest else " off"))
    if expression_copied:
        parts.append("as photo?")
    return "  ".join(parts)


def _candidate_line(m) -> str:
    if not m.face_found:
        return "no face"
    return _metric_caption(m.identity_cosine, m.copy_suspected, m.blendshape_l1, m.expression_nearest,
                           m.expression_copied, m.judge_top, m.judge_probability)
