"""The Sampling Guard node: bundles what scoring needs into one GA_SAMPLING_GUARD value for the set samplers
(what they do with it: ``nodes/sampling/guard.py``)."""

from __future__ import annotations

from ..models.errors import GenAffectInputError
from . import sockets
from .sampling.guard import SamplingGuard


class GenAffectSamplingGuard:
    DESCRIPTION = (
        "Makes the batch samplers keep only faces that pass: connect its guard to GenAffect Consistent Batch Sampler "
        "or GenAffect DiT Sampler. Each round the sampler decodes the set with the VAE and scores every face like "
        "Face Metrics against its own target; a face passes when it is found, is the person (identity at least "
        "min_identity), is not copied from a reference, is read by the expression judge as the asked-for expression, "
        "does not show the reference photo's expression instead, and is within the expression-error limit (Select "
        "Best's rule, which also ranks identity first). The expressions without a passing face are "
        "sampled again with new seeds derived from the seed, until all pass or the retries are spent; the "
        "sampler's report says which failed."
    )
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "build"
    RETURN_TYPES = (sockets.SAMPLING_GUARD,)
    RETURN_NAMES = ("guard",)
    OUTPUT_TOOLTIPS = ("For the guard input of the Consistent Batch Sampler or the DiT Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "The VAE that decodes the sampler's latents (the one you decode the set "
                                           "with)."}),
                "face_analyzer": (sockets.FACE_ANALYZER, {
                    "tooltip": "From Face Analyzer Loader, with the same recognition as the reference identity."}),
                "identity": (sockets.IDENTITY, {"tooltip": "The reference identity (Extract Identity)."}),
                "candidates": ("INT", {"default": 1, "min": 1, "max": 16,
                                       "tooltip": "K: candidates sampled per expression in every round (the batch "
                                                  "is N x K images, so memory grows with K); the best passing one is "
                                                  "kept."}),
                "retries": ("INT", {"default": 2, "min": 0, "max": 16,
                                    "tooltip": "Rounds after the first that re-sample the expressions still failing. "
                                               "0: one round (with K > 1 that is Select Best inside the sampler)."}),
                "min_identity": ("FLOAT", {"default": 0.4, "min": -1.0, "max": 1.0, "step": 0.01,
                                           "tooltip": "Lowest ArcFace cosine to the reference identity that passes "
                                                      "(below ~0.4 it is likely someone else; -1: no limit)."}),
                "max_expression_error": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.005,
                                                   "tooltip": "Highest expression error (Face Metrics' blendshape L1 "
                                                              "to the face's own target) that passes; 1: no limit, "
                                                              "the nearest-expression check still applies."}),
            },
            "optional": {
                "target_expression": (sockets.EXPRESSION, {
                    "tooltip": "What each image should show, one per image (or one for all). The DiT Sampler "
                               "uses its own expression when this is not connected."}),
                "estimator": (sockets.EXPRESSION_ESTIMATOR, {
                    "tooltip": "Re-estimates each face's expression (Expression Estimator Loader); without it only "
                               "identity and copying are checked."}),
                "held_out_identity": (sockets.IDENTITY, {"tooltip": "Other photos of the person (see Face Metrics)."}),
                "reference_expression": (sockets.EXPRESSION, {
                    "tooltip": "The reference photo's own expression (Estimate Expression on it): the judge reads "
                               "each face relative to the person's photo, and a face that shows the photo's "
                               "expression instead of its target fails ('expression copied'). Needs the estimator."}),
                "max_pose_error": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 90.0, "step": 0.5,
                                             "tooltip": "Largest head pose error (degrees, the worst of yaw, pitch and "
                                                        "roll) that passes: each face against the reference photo's "
                                                        "pose plus its target's head turn. Needs reference_expression "
                                                        "and the target. 0: no limit."}),
                "expression_network": (sockets.EXPRESSION_NETWORK, {
                    "tooltip": "A pixel judge (Expression Network Loader): its reading of every face is reported "
                               "beside the landmark judge's, and a face passes when both judges averaged read "
                               "the asked-for expression."}),
            },
        }

    def build(self, vae, face_analyzer, identity, candidates, retries, min_identity, max_expression_error,
              target_expression=None, estimator=None, held_out_identity=None, reference_expression=None,
              max_pose_error=0.0, expression_network=None):
        if max_pose_error > 0 and (reference_expression is None or target_expression is None):
            raise GenAffectInputError(
                "the guard's max_pose_error compares each face's head pose with the reference photo's plus its target's "
                "head turn: connect reference_expression (Estimate Expression on the photo) and target_expression, "
                "or set max_pose_error to 0.")
        if reference_expression is not None and estimator is None:
            raise GenAffectInputError("the guard's reference_expression is compared with each generated face's "
                                      "expression, which needs the estimator: connect GenAffect Expression Estimator "
                                      "Loader, or disconnect reference_expression.")
        if target_expression is not None and estimator is None:
            raise GenAffectInputError(
                "the guard has a target expression but no estimator to read the generated faces' expressions: "
                "connect GenAffect Expression Estimator Loader (ComfyUI's face_landmarks describe given images, not "
                "the ones the sampler makes), or disconnect target_expression to check identity only.")
        return (SamplingGuard(vae, face_analyzer, identity, target_expression, estimator, held_out_identity,
                              candidates, retries, min_identity, max_expression_error, reference_expression,
                              max_pose_error or None, expression_network),)
