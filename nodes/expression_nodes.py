"""Expression presets, editing, transitions and prompt text (category GenAffect/expression)."""

from __future__ import annotations

import numpy as np

from ..models.errors import GenAffectInputError
from ..models.expression import expression_edit, expression_library, expression_text
from ..models.expression.batch import NUM_BLENDSHAPES, ExpressionBatch, split_list
from ..models.images import checked_image_layout
from . import sockets

EXPRESSION_INPUT = (sockets.EXPRESSION, {"tooltip": "Expressions from a preset, editor, estimator or transition."})
PHOTO_INPUT = ("IMAGE", {"tooltip": "Optional: a photo (from Load Image) to see the expression on, live - the node shows "
                                    "it warped as you move the sliders or type names. Only the preview uses it: Warp "
                                    "Expression makes the warped images."})


def check_preview_photo(photo) -> None:
    """Only the browser's preview shows the photo (its pixels are not read here), but an empty or malformed one is
    a mistake upstream that the user should hear of here, not find as a blank preview."""
    if photo is not None:
        checked_image_layout(photo, "photo")


class _ExpressionNode:
    """What the nodes that output one GA_EXPRESSION have in common."""

    CATEGORY = "GenAffect/expression"
    RETURN_TYPES = (sockets.EXPRESSION,)
    RETURN_NAMES = ("expression",)


class GenAffectExpressionPreset(_ExpressionNode):
    DESCRIPTION = (
        "Expressions from GenAffect's library by name (basic emotions, the 15 compound expressions of "
        "Du et al. 2014, winks, smirks, pouts, gaze, visemes, ...), each defined as FACS Action Units and "
        "turned into 52 blendshapes. Each also carries its target as MediaPipe reads it (calibrated on labelled "
        "photos for the basic emotions), which Face Metrics and Select Best compare faces with. Several names make "
        "a batch, in the order given."
    )
    FUNCTION = "build"
    OUTPUT_TOOLTIPS = ("One expression per name, labelled with its name: the FACS recipe's blendshapes (prompts, "
                       "sliders) and the estimator-space target beside them.",)

    @classmethod
    def INPUT_TYPES(cls):
        names = expression_library.preset_names()
        return {
            "required": {
                "expressions": ("STRING", {"default": "neutral, happy, sad, surprised, angry, wink left", "multiline": True,
                                           "tooltip": "Library names separated by commas or new lines. Available: "
                                                      + ", ".join(names)}),
                "intensity": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                        "tooltip": "Scales every blendshape (clipped to 0..1)."}),
            },
            "optional": {"photo": PHOTO_INPUT},
        }

    def build(self, expressions, intensity, photo=None):
        check_preview_photo(photo)
        return (expression_library.presets(split_list(expressions), intensity),)


class GenAffectExpressionEditor(_ExpressionNode):
    DESCRIPTION = (
        "Sculpt an expression with sliders grouped by region (brows, eyes, gaze, cheeks, nose, mouth, jaw; left and "
        "right separately) and turn the head (yaw, pitch, roll). Sliders add to the incoming expressions (or to a "
        "neutral face when nothing is connected); intensity scales the result. FLAME-55 values, when present, get the "
        "jaw, eyelid and intensity edits. The output is labelled with the preset picked in the gallery until a slider "
        "moves. Connect a photo to see the expression on it, live."
    )
    FUNCTION = "edit"
    OUTPUT_TOOLTIPS = ("The edited expressions (same count as the input, or one).",)

    @classmethod
    def INPUT_TYPES(cls):
        sliders = {
            slider.name: ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.01,
                                    "tooltip": f"{slider.label} [{slider.region}: {', '.join(slider.adds + slider.subtracts)}]"
                                               f" {slider.tooltip}"})
            for region in expression_edit.REGIONS
            for slider in expression_edit.SLIDERS
            if slider.region == region
        }
        limit = expression_edit.HEAD_LIMIT_DEGREES
        head = {slider.name: ("FLOAT", {"default": 0.0, "min": -limit, "max": limit, "step": 0.5,
                                        "tooltip": f"{slider.label} [head] {slider.tooltip}"})
                for slider in expression_edit.HEAD_SLIDERS}
        return {
            "required": {
                "intensity": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                        "tooltip": "Scales the whole expression after the slider edits."}),
                **sliders,
            },
            # optional and after the sliders: workflows saved before they existed keep their values in place
            "optional": {"expression": EXPRESSION_INPUT, **head, "photo": PHOTO_INPUT},
        }

    def edit(self, intensity, expression=None, head_yaw=0.0, head_pitch=0.0, head_roll=0.0, photo=None, **sliders):
        check_preview_photo(photo)
        if expression is None:  # a relaxed face: no movement, and what the estimator reads on one
            label = expression_edit.preset_of_sliders(sliders) or "edited"
            expression = ExpressionBatch(labels=[label], blendshapes=np.zeros((1, NUM_BLENDSHAPES), np.float32),
                                         estimator_blendshapes=expression_library.estimator_target("neutral")[None])
        edited = expression_edit.apply_edits(expression, sliders, intensity)
        turn = (head_yaw, head_pitch, head_roll)
        if any(turn) or expression.head_turn is not None:
            edited = expression_edit.add_head_turn(edited, turn)
        return (edited,)


class GenAffectExpressionInterpolate(_ExpressionNode):
    DESCRIPTION = (
        "A transition from expression A to expression B in a number of steps (endpoints included), linear or "
        "eased: for animations, micro-expressions and in-between frames. A and B may each hold one expression "
        "or the same number (paired row by row)."
    )
    FUNCTION = "interpolate"
    OUTPUT_TOOLTIPS = ("steps expressions per pair, from A to B.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "expression_a": (sockets.EXPRESSION, {"tooltip": "Where the transition starts."}),
                "expression_b": (sockets.EXPRESSION, {"tooltip": "Where the transition ends."}),
                "steps": ("INT", {"default": 5, "min": 2, "max": 256, "tooltip": "Expressions produced, A and B included."}),
                "easing": (list(expression_edit.EASINGS), {"tooltip": "How the steps are spaced in time."}),
            }
        }

    def interpolate(self, expression_a, expression_b, steps, easing):
        return (expression_edit.interpolate(expression_a, expression_b, steps, easing),)


class GenAffectExpressionMix(_ExpressionNode):
    DESCRIPTION = "One expression as a weighted mix of the expressions in a batch (e.g. 70% happy + 30% surprised)."
    FUNCTION = "mix"
    OUTPUT_TOOLTIPS = ("The mixed expression.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "expression": (sockets.EXPRESSION, {"tooltip": "The expressions to mix (a batch)."}),
                "weights": ("STRING", {"default": "1, 1", "tooltip": "One weight per expression, separated by commas; "
                                                                   "they are normalised to sum to 1."}),
            }
        }

    def mix(self, expression, weights):
        return (expression_edit.mix(expression, expression_edit.parse_weights(weights)),)


class GenAffectHeadTurns(_ExpressionNode):
    DESCRIPTION = (
        "A head-pose sheet: every expression once per head turn you list ('straight, yaw -20, yaw 20, pitch 10'), the "
        "turn carried with the expression (the Editor's head sliders, added to any turn it has). Expression To "
        "Prompt words the turns for each editor, Warp Expression turns a photo's head by them, Face Metrics measures "
        "them."
    )
    FUNCTION = "turn"
    OUTPUT_TOOLTIPS = ("Every expression x every turn, labelled '<expression>, <turn>'.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "turns": ("STRING", {"default": "straight, yaw -20, yaw 20, pitch -10, pitch 10, roll 10",
                                     "tooltip": "Head turns separated by commas: 'straight' or axis-degree pairs "
                                                "('yaw 15 pitch -10'). yaw > 0 turns towards the image's right (the "
                                                "subject's left), pitch > 0 lowers the chin, roll > 0 tilts "
                                                "counter-clockwise in the image; within +-90 degrees."}),
            },
            "optional": {"expression": (sockets.EXPRESSION, {"tooltip": "The expressions to turn; unconnected: a "
                                                                      "neutral face."})},
        }

    def turn(self, turns, expression=None):
        if expression is None:
            expression = expression_library.presets(["neutral"], 1.0)
        return (expression_edit.with_head_turns(expression, expression_edit.parse_turns(turns)),)


class GenAffectExpressionToPrompt:
    DESCRIPTION = (
        "Describes each expression in words ('left mouth corner slightly raised, brows lowered and drawn together, "
        "jaw open'), deterministically. Style 'description' makes prompts for text-to-image models such as FLUX; "
        "the edit styles make instructions for instruction editors (Qwen-Image-Edit, FLUX.2, FLUX.1 Kontext): "
        "what to change (the same words) and what to keep. 'prompts' is a list (one prompt per expression), "
        "'text' has them one per line."
    )
    CATEGORY = _ExpressionNode.CATEGORY
    FUNCTION = "describe"
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("prompts", "text")
    OUTPUT_IS_LIST = (True, False)
    OUTPUT_TOOLTIPS = ("One prompt per expression (a list: nodes after it run once per prompt).", "All prompts, one per line.")
    STYLES = {"description": None, "edit: Qwen-Image-Edit": "qwen_image_edit", "edit: FLUX.2": "flux2",
              "edit: FLUX.1 Kontext": "kontext", "edit: PixelSmile": "pixelsmile", "edit: own template": "template"}

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "expression": EXPRESSION_INPUT,
                "prefix": ("STRING", {"default": "close-up portrait photo of a person,", "multiline": False,
                                      "tooltip": "Words before each description (style 'description' only), on one line."}),
                "suffix": ("STRING", {"default": "", "multiline": False,
                                      "tooltip": "Words after each description (style 'description' only), on one line."}),
            },
            "optional": {  # optional, so workflows saved before the edit styles still load
                "style": (list(cls.STYLES), {"default": "description",
                                             "tooltip": "A prompt for text-to-image models, or an edit instruction "
                                                        "worded for the editor you run."}),
                "keep": ("STRING", {"default": expression_text.KEEP, "multiline": True,
                                    "tooltip": "Edit styles: what the editor must keep; replaces {keep}. Line breaks become "
                                               "spaces ('text' lists one instruction per line)."}),
                "template": ("STRING", {"default": "Give the person this facial expression: {expression}. Keep {keep}.",
                                        "multiline": True,
                                        "tooltip": "Style 'edit: own template': your wording, with {expression} "
                                                   "where the description goes and optionally {keep}. Line breaks "
                                                   "become spaces."}),
            },
        }

    def describe(self, expression, prefix, suffix, style="description", keep=expression_text.KEEP, template=""):
        blendshapes = expression.require("blendshapes", "Expression To Prompt")
        if style not in self.STYLES:
            raise GenAffectInputError(f"unknown style {style!r}; choose one of {', '.join(self.STYLES)}.")
        family = self.STYLES[style]
        turns = expression.head_turn
        if family is None:
            prompts = expression_text.describe_batch(blendshapes, prefix, suffix, turns)
        elif family == "pixelsmile":
            if turns is not None and any(expression_text.describe_turn(turn) for turn in turns):
                raise GenAffectInputError("PixelSmile's instructions name an expression category only; they cannot ask "
                                          "for a head turn. Use an 'edit: Qwen-Image-Edit' instruction for it, or turn "
                                          "the photo's head with Warp Expression.")
            prompts = expression_text.pixelsmile_batch(expression.labels)
        else:
            prompts = expression_text.instruction_batch(blendshapes, template if family == "template" else family, keep,
                                                        turns)
        return (prompts, "\n".join(prompts))
