"""Evaluation of a generated set and expression sheets (category GenAffect/evaluate)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np

from ..models.drawing.face_drawing import with_target_glyph
from ..models.drawing.pictures import draw_curves, draw_metrics_chart, draw_sheet
from ..models.errors import GenAffectInputError
from ..models.evaluation import face_metrics, select_best
from ..models.expression.batch import BLENDSHAPE_NAMES, split_list
from ..models.expression.expression_library import estimator_space
from ..models.images import image_batch_to_rgb_uint8, rgb_uint8_to_image_batch
from . import comfy_host, sockets

log = logging.getLogger(__name__)


class GenAffectFaceMetrics:
    DESCRIPTION = (
        "Scores a generated set: ArcFace cosine of each face to the reference identity, the set's consistency "
        "(mean and minimum cosine over all pairs), and, with a target expression, the expression error (mean L1 "
        "over the re-estimated blendshapes; FLAME-55 L2 when SMIRK is loaded and the target has it). Images "
        "without a face are reported, not fatal. Outputs JSON and a chart."
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
                    "tooltip": "The reference photo's own expression (Estimate Expression on it): flags faces "
                               "that show it instead of their target ('expression copied')."}),
                "labels": ("STRING", {"default": "", "multiline": True,
                                      "tooltip": "One label per image (commas or new lines); empty: the target's "
                                                 "labels, or 'image 0', ..."}),
            },
        }

    def measure(self, images, face_analyzer, identity, target_expression=None, estimator=None, labels="",
                face_landmarks=None, held_out_identity=None, reference_expression=None):
        frames = image_batch_to_rgb_uint8(images, what="Face Metrics images")
        names = split_list(labels)
        if not names and target_expression is not None and len(target_expression) == len(frames):
            names = list(target_expression.labels)
        on_progress = comfy_host.progress_callback(len(frames))

        metrics = face_metrics.measure(face_analyzer, identity, frames, names or None, target_expression, estimator,
                                       on_progress, core_landmarks=face_landmarks, held_out=held_out_identity,
                                       reference_expression=reference_expression)
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
                                     image.get("expression_copied")))
    return lines


CHOSEN = (90, 200, 120)  # the frame around a chosen candidate on the contact sheet


class GenAffectSelectBest:
    DESCRIPTION = (
        "Keeps the best of K candidates per expression: the images come in rounds (all N expressions, then all "
        "again, K times, e.g. K sampler runs with other seeds batched). Each is scored like Face Metrics (identity "
        "to the reference, expression error and accuracy against its own target, the copy check); a candidate "
        "must show a face, not be copied and be nearest its own target, then the highest identity cosine minus "
        "expression error wins (the earlier round on a tie). Outputs the N chosen images in order, a JSON report "
        "of every candidate and a contact sheet with the chosen ones framed."
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
                    "tooltip": "The reference photo's own expression: a candidate showing it instead of its target "
                               "loses (see Face Metrics)."}),
                "max_pose_error": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 90.0, "step": 0.5,
                                             "tooltip": "Largest head pose error (degrees, the worst of yaw, pitch and "
                                                        "roll) that passes: each candidate against the reference "
                                                        "photo's pose plus its target's head turn. Needs "
                                                        "reference_expression. 0: no limit."}),
            },
        }

    def select(self, images, candidates, face_analyzer, identity, target_expression, estimator=None,
               face_landmarks=None, held_out_identity=None, reference_expression=None, max_pose_error=0.0):
        if max_pose_error > 0 and (reference_expression is None or reference_expression.head_pose is None):
            raise GenAffectInputError(
                "Select Best's max_pose_error compares each candidate's head pose with the reference photo's plus its "
                "target's head turn: connect reference_expression from Estimate Expression on the photo (it carries "
                "the photo's pose), or set max_pose_error to 0.")
        frames = image_batch_to_rgb_uint8(images, what="Select Best images")
        targets = select_best.candidate_targets(target_expression, len(frames), candidates)
        metrics = face_metrics.measure(face_analyzer, identity, frames, list(targets.labels), targets, estimator,
                                       comfy_host.progress_callback(len(frames)), core_landmarks=face_landmarks,
                                       held_out=held_out_identity, reference_expression=reference_expression)
        rule = select_best.PassRule(max_pose_error=max_pose_error or None)
        choices = select_best.choose(metrics, len(target_expression), candidates, rule)
        best = [frames[c.index] for c in sorted((c for c in choices if c.chosen), key=lambda c: c.expression)]
        report = json.dumps([{"expression": target_expression.labels[c.expression], "candidate": c.candidate + 1,
                              "index": c.index, "chosen": c.chosen, **dataclasses.asdict(c.metrics)}
                             for c in choices], indent=2)
        by_row = sorted(choices, key=lambda c: (c.expression, c.candidate))
        cells = [_framed(frames[c.index]) if c.chosen else frames[c.index] for c in by_row]
        captions = [[f"{target_expression.labels[c.expression]} #{c.candidate + 1}" + (" chosen" if c.chosen else ""),
                     _candidate_line(c.metrics)] for c in by_row]
        sheet = draw_sheet(cells, captions, candidates, "Select Best: one row per expression")
        return (rgb_uint8_to_image_batch(best), report, rgb_uint8_to_image_batch([sheet]))


def _framed(image: np.ndarray, width: int = 6) -> np.ndarray:
    framed = image.copy()
    framed[:width], framed[-width:], framed[:, :width], framed[:, -width:] = CHOSEN, CHOSEN, CHOSEN, CHOSEN
    return framed


def _metric_caption(similarity: float, copied, error, nearest, expression_copied=None) -> str:
    """One sheet caption line: identity cosine (and the copy flag), expression error (whether it is nearest its
    own target, and whether it shows the reference photo's expression instead)."""
    parts = [f"ID {similarity:.2f}" + (" copied?" if copied else "")]
    if error is not None:
        parts.append(f"expr {error:.3f}" + ("" if nearest is None else " ok" if nearest else " off")
                     + (" as photo?" if expression_copied else ""))
    return "  ".join(parts)


def _candidate_line(m) -> str:
    if not m.face_found:
        return "no face"
    return _metric_caption(m.identity_cosine, m.copy_suspected, m.blendshape_l1, m.expression_nearest,
                           m.expression_copied)
