"""Expressions drawn with GenAffect's face model: see a set before any model is downloaded (GenAffect/expression)."""

from __future__ import annotations

from ..models.drawing.face_drawing import draw_expressions
from ..models.expression import expression_text
from ..models.images import rgb_uint8_to_image_batch
from . import comfy_host, sockets


class GenAffectDrawExpressions:
    DESCRIPTION = (
        "Draws each expression of a batch with GenAffect's face model (the schematic face the live editor shows), "
        "labelled, optionally with the prompt text Expression To Prompt would write, as one sheet. Needs no model "
        "file: wire a Preset, Editor, Interpolate or Estimate Expression to see what a set asks for."
    )
    CATEGORY = "GenAffect/expression"
    FUNCTION = "draw"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("sheet",)
    OUTPUT_TOOLTIPS = ("One labelled grid of the expressions' faces.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "expression": (sockets.EXPRESSION, {"tooltip": "The expressions to draw (blendshapes needed)."}),
                "face_size": ("INT", {"default": 192, "min": 64, "max": 1024, "step": 16,
                                      "tooltip": "Pixels per face."}),
                "columns": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "0: a near-square grid."}),
                "prompts": ("BOOLEAN", {"default": True,
                                        "tooltip": "Write each expression's prompt text (Expression To Prompt's "
                                                   "description) under its face."}),
                "title": ("STRING", {"default": "", "tooltip": "Written on top of the sheet."}),
            }
        }

    def draw(self, expression, face_size, columns, prompts, title):
        blendshapes = expression.require("blendshapes", "GenAffect Draw Expressions")
        texts = expression_text.describe_batch(blendshapes) if prompts else None
        sheet = draw_expressions(expression, face_size, columns, title, texts,
                                 on_progress=comfy_host.progress_callback(len(expression)))
        return (rgb_uint8_to_image_batch([sheet]),)
