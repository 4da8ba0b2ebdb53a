"""A photo's face moved to other expressions by the face-motion model (category GenAffect/expression)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..models.errors import GenAffectInputError
from ..models.expression import expression_edit, expression_estimator, face_motion, photo_warp
from ..models.face import face_choice
from ..models.images import image_batch_to_rgb_uint8, rgb_uint8_to_image_batch
from . import comfy_host, sockets

log = logging.getLogger(__name__)
NODE = "GenAffect Warp Expression"


class GenAffectWarpExpression:
    DESCRIPTION = (
        "Moves the face in each photo to each expression of a batch, and turns the head a little: MediaPipe's 478 "
        "landmarks are moved by a face-motion model learnt from thousands of photos of real people, and the photo is "
        "warped over the face mesh (the mouth inside is filled from the photo's own colours when the lips part). "
        "Everything outside the face is left exactly as it was; the mask says which pixels changed. No diffusion "
        "model: fast, and the same photo stays the same person. Use it to see an expression on your photo, or as a "
        "guide for generation (an expression template for Estimate Expression, a second image for an editor)."
    )
    CATEGORY = "GenAffect/expression"
    FUNCTION = "warp"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("images", "masks", "report")
    OUTPUT_TOOLTIPS = (
        "One image per photo and expression, photo by photo (photo 0 in every expression, then photo 1, ...).",
        "Per image, 1 where the warp changed the pixel, 0 where it is the photo's.",
        "Per photo: its face, its own expression's pose, what was warped or why it was skipped.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        limit = expression_edit.HEAD_LIMIT_DEGREES
        turn = {"default": 0.0, "min": -limit, "max": limit, "step": 0.5}
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The photos (a batch). A neutral, closed-mouth, frontal face warps best."}),
                "expression": (sockets.EXPRESSION, {
                    "tooltip": "The expressions to show: presets go to what the estimator reads on such faces, "
                               "estimated expressions to their own reading; an Editor's head sliders turn the head."}),
                "intensity": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.5, "step": 0.05,
                                        "tooltip": "How far from the photo's own expression towards each target: "
                                                   "0 = the photo unchanged, 1 = the target, above 1 exaggerates."}),
                "yaw": ("FLOAT", {**turn, "tooltip": "Turn the head (degrees): positive = towards the image's right. "
                                                     "Added to the expression's own head turn."}),
                "pitch": ("FLOAT", {**turn, "tooltip": "Nod the head (degrees): positive = chin down."}),
                "roll": ("FLOAT", {**turn, "tooltip": "Tilt the head (degrees): positive = counter-clockwise."}),
                "gaze_horizontal": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.05,
                                              "tooltip": "Added gaze: negative = to the subject's left (the image's "
                                                         "right), positive = to the subject's right."}),
                "gaze_vertical": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.05,
                                            "tooltip": "Added gaze: positive = up, negative = down."}),
                "face_order": (list(face_choice.FACE_ORDERS), {
                    "tooltip": "How faces in one photo are ordered before face_index picks one."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 15,
                                       "tooltip": "Which face to move in the chosen order (0 = first)."}),
                "on_no_face": (list(face_choice.NO_FACE_POLICIES), {
                    "tooltip": "skip: leave photos without a face out (with a warning); error: stop. No face in any "
                               "photo is always an error."}),
            },
            "optional": {
                "estimator": (sockets.EXPRESSION_ESTIMATOR, {
                    "tooltip": "From GenAffect Expression Estimator Loader: finds each photo's landmarks."}),
                "face_landmarks": ("FACE_LANDMARKS", {
                    "tooltip": "From ComfyUI's MediaPipe Face Landmarker on the same photos (no mediapipe package "
                               "needed): used instead of the estimator."}),
            },
        }

    def warp(self, images, expression, intensity, yaw, pitch, roll, gaze_horizontal, gaze_vertical, face_order,
             face_index, on_no_face, estimator=None, face_landmarks=None):
        frames = image_batch_to_rgb_uint8(images, what=f"{NODE} images")
        if not 0.0 <= intensity <= 1.5:
            raise GenAffectInputError(f"intensity must be within 0..1.5, got {intensity}.")
        if gaze_horizontal or gaze_vertical:
            expression = expression_edit.apply_edits(
                expression, {"gaze_horizontal": gaze_horizontal, "gaze_vertical": gaze_vertical})
        targets = expression.estimator_space(NODE)
        turns = expression.filled("head_turn").astype(np.float64) + np.array([yaw, pitch, roll], np.float64)
        too_far = np.abs(turns).max(axis=1) > face_motion.MAX_TURN_DEGREES
        if too_far.any():
            row = int(np.argmax(too_far))
            raise GenAffectInputError(
                f"expression '{expression.labels[row]}' asks for a head turn of {turns[row].round(1).tolist()} degrees "
                f"with this node's yaw/pitch/roll; a warp turns at most {face_motion.MAX_TURN_DEGREES:g} each way (the "
                "hidden side of the head is not in the photo). Turn less here or in the Editor.")
        estimation = expression_estimator.estimate_expressions(
            estimator, frames, face_order=face_order, face_index=face_index, on_no_face=on_no_face,
            on_progress=comfy_host.progress_callback(len(frames)), core_landmarks=face_landmarks)
        found = estimation.expression
        motion = face_motion.face_motion()
        photos = [frames[i] for i in estimation.image_indices]
        faces = [face_motion.pose_face(motion.mesh, found.landmarks[row], found.blendshapes[row], found.head_pose[row],
                                       rgb.shape[1], rgb.shape[0]) for row, rgb in enumerate(photos)]
        results = photo_warp.warp_photos(motion, photos, faces, targets, intensity, turns,
                                         on_progress=comfy_host.progress_callback(len(photos) * len(targets)))
        report = self._report(estimation, expression.labels, intensity, [motion.beyond_reach(t) for t in targets])
        log.info("GenAffect %s", report)
        masks = torch.from_numpy(np.stack([r.mask for r in results]).astype(np.float32))
        return (rgb_uint8_to_image_batch([r.image for r in results]), masks, report)

    @staticmethod
    def _report(estimation, labels, intensity, beyond) -> str:
        found = estimation.expression
        lines = [f"{len(estimation.image_indices)} photo(s) x {len(labels)} expression(s) "
                 f"({', '.join(labels)}) at intensity {intensity:g}"]
        for row, index in enumerate(estimation.image_indices):
            yaw, pitch, roll = found.head_pose[row]
            line = f"  photo {index}: face seen at yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f}"
            warning = photo_warp.strong_reading_warning(found.blendshapes[row])
            lines.append(line + (f"; note: {warning}" if warning else ""))
        for skipped in estimation.skipped:
            lines.append(f"  photo {skipped.image_index} skipped: {skipped.reason}")
        for label, limited in zip(labels, beyond):
            if limited:
                asked = ", ".join(f"{name} {value:.2f} -> {reach:.2f}" for name, (value, reach) in limited.items())
                lines.append(f"  '{label}' asks for more than real faces showed the model; warped as far as they did: "
                             f"{asked}")
        return "\n".join(lines)
