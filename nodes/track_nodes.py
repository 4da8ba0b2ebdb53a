"""Expression tracks from a video (category GenAffect/expression)."""

from __future__ import annotations

import logging

import numpy as np

from ..models.drawing.pictures import draw_curves
from ..models.expression import expression_track
from ..models.expression.batch import BLENDSHAPE_INDEX
from ..models.face.face_listing import DEFAULT_MIN_SIMILARITY
from ..models.images import image_batch_to_rgb_uint8, rgb_uint8_to_image_batch
from . import comfy_host, sockets

log = logging.getLogger(__name__)
DEFAULTS = expression_track.OneEuro()
CURVE_SHAPES = ("jawOpen", "mouthSmileLeft", "eyeBlinkLeft", "browInnerUp")  # what the chart follows


class GenAffectExpressionTrack:
    DESCRIPTION = (
        "An expression track from video frames (core's Load Video -> Get Video Components): the person is followed "
        "by identity (the one you connect, or the first frame's largest face), their expression, head pose and "
        "landmarks read on every frame, frames without them bridged and reported, and the curves smoothed with a "
        "One-Euro filter run both ways (no lag at sudden changes). The expressions drive Conditioning Intensity, "
        "the Expression Adapter or the samplers frame by frame; the report gives the jitter before and after."
    )
    CATEGORY = "GenAffect/expression"
    FUNCTION = "track"
    RETURN_TYPES = (sockets.EXPRESSION, "FLOAT", "IMAGE", "STRING")
    RETURN_NAMES = ("expression", "fps", "curves", "report")
    OUTPUT_TOOLTIPS = (
        "One smoothed expression per kept frame (every step-th), labelled 'frame N'.",
        "The track's frame rate (the video's divided by step), for Create Video.",
        "Chart: a few blendshapes and the head yaw as read (dashed) and smoothed (solid); red ticks: no face.",
        "Frames with the person, the gaps bridged, the identity match, and the jitter before and after smoothing.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The video's frames (Get Video Components' images)."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.1, "max": 240.0, "step": 0.01,
                                  "tooltip": "The video's frame rate (Get Video Components' fps): the filter's time "
                                             "scale."}),
                "face_analyzer": (sockets.FACE_ANALYZER, {"tooltip": "Finds and recognises the faces of each frame."}),
                "estimator": (sockets.EXPRESSION_ESTIMATOR, {
                    "tooltip": "Reads the person's expression on each frame."}),
                "smoothing": ("FLOAT", {"default": DEFAULTS.min_cutoff, "min": 0.05, "max": 30.0, "step": 0.05,
                                        "tooltip": "One-Euro min cutoff in Hz: lower steadies a still face more."}),
                "responsiveness": ("FLOAT", {"default": DEFAULTS.beta, "min": 0.0, "max": 20.0, "step": 0.05,
                                             "tooltip": "One-Euro beta: higher lets fast moves through with less "
                                                        "smoothing."}),
                "two_way": ("BOOLEAN", {"default": True,
                                        "tooltip": "Filter forward and backward and average: sudden changes stay where "
                                                   "they happen (no lag). Off: the causal filter, as live."}),
                "step": ("INT", {"default": 1, "min": 1, "max": 120,
                                 "tooltip": "Keep every step-th frame's expression (after smoothing every frame)."}),
                "max_gap_seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 60.0, "step": 0.1,
                                              "tooltip": "Longest stretch without the person that is bridged; longer "
                                                         "stops with the frames named. 0: no limit."}),
            },
            "optional": {
                "identity": (sockets.IDENTITY, {"tooltip": "The person to follow (Extract Identity); unconnected: the "
                                                           "first frame's largest face."}),
                "min_similarity": ("FLOAT", {"default": DEFAULT_MIN_SIMILARITY, "min": -1.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "Lowest ArcFace cosine that counts as the person."}),
            },
        }

    def track(self, images, fps, face_analyzer, estimator, smoothing, responsiveness, two_way, step, max_gap_seconds,
              identity=None, min_similarity=DEFAULT_MIN_SIMILARITY):
        frames = image_batch_to_rgb_uint8(images, what="Expression Track frames")
        result = expression_track.track_expressions(
            face_analyzer, estimator, frames, fps, identity=identity, min_similarity=min_similarity,
            settings=expression_track.OneEuro(smoothing, responsiveness), two_way=two_way, step=step,
            max_gap_seconds=max_gap_seconds, on_progress=comfy_host.progress_callback(len(frames)))
        report = result.report()
        log.info("GenAffect expression track:\n%s", report)
        return (result.expression, float(fps) / step, rgb_uint8_to_image_batch([track_chart(result)]), report)


def track_chart(track: expression_track.ExpressionTrack) -> np.ndarray:
    """A few blendshapes (0..1) and the head yaw (-45..45 degrees, mapped onto the same axis) over the frames."""
    curves = []
    raw, smoothed = track.raw["blendshapes"], track.smoothed_all["blendshapes"]
    for colour, name in enumerate(CURVE_SHAPES):
        column = BLENDSHAPE_INDEX[name]
        curves += [(f"{name} read", raw[:, column], colour, True), (name, smoothed[:, column], colour, False)]
    if track.raw.get("head_pose") is not None:
        to_unit = lambda yaw: (np.clip(yaw, -45.0, 45.0) + 45.0) / 90.0  # noqa: E731
        colour = len(CURVE_SHAPES)
        curves += [("yaw read (-45..45 deg)", to_unit(track.raw["head_pose"][:, 0]), colour, True),
                   ("yaw", to_unit(track.smoothed_all["head_pose"][:, 0]), colour, False)]
    missing = [int(t) for t in np.flatnonzero(~track.present)]
    return draw_curves(f"expression track: {int(track.present.sum())}/{len(track.present)} frames with the person",
                       curves, len(track.present), marks=missing)
