"""The live expression editor's server side: what the browser (js/expression_editor.js) asks while sliders
move, with no run queued. The blendshapes come from the nodes' own code, so the drawing shows exactly what
the node will output; the face model itself is data (models/data/face_model.json)."""

from __future__ import annotations

from ..models.drawing.face_drawing import face_model_data
from ..models.expression import expression_edit, expression_library
from ..models.expression.batch import BLENDSHAPE_NAMES
from .expression_nodes import GenAffectExpressionEditor, GenAffectExpressionPreset

PREFIX = "/genaffect/expression_editor"
MAX_PREVIEW = 64  # expressions drawn at most: a preset list is typed by hand


def editor_data() -> dict:
    """Everything the editor draws with: the face model, the blendshape order, every preset and its sliders."""
    names = expression_library.preset_names()
    batch = expression_library.presets(names, 1.0)
    presets = [{"name": name, "tags": list(expression_library.library()[name].tags), "blendshapes": row.tolist(),
                "sliders": expression_edit.sliders_from_blendshapes(row)}
               for name, row in zip(names, batch.blendshapes)]
    return {"model": face_model_data(), "blendshape_names": list(BLENDSHAPE_NAMES), "presets": presets,
            "sliders": list(expression_edit.SLIDER_NAMES)}


def preview(payload: dict) -> dict:
    """The expressions an Expression Editor or Preset node would output for the widget values in ``payload``
    ({"node": class name, "inputs": {widget: value}}). An input the node would refuse gives {"error": why}."""
    node, inputs = payload.get("node"), payload.get("inputs") or {}
    try:
        if node == "GenAffectExpressionEditor":
            sliders = {name: float(inputs.get(name, 0.0)) for name in expression_edit.SLIDER_NAMES}
            batch = GenAffectExpressionEditor().edit(float(inputs.get("intensity", 1.0)), **sliders)[0]
        elif node == "GenAffectExpressionPreset":
            batch = GenAffectExpressionPreset().build(str(inputs.get("expressions", "")),
                                                       float(inputs.get("intensity", 1.0)))[0]
        else:
            return {"error": f"no live preview for {node!r}"}
    except (TypeError, ValueError) as error:  # GenAffectInputError is a ValueError
        return {"error": str(error)}
    shown = min(len(batch), MAX_PREVIEW)
    return {"labels": list(batch.labels[:shown]), "blendshapes": batch.blendshapes[:shown].tolist(),
            "count": len(batch)}


def register_routes() -> None:
    """Add the editor's two routes to ComfyUI's server (nothing to do when it is not running, e.g. in tests)."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return
    if getattr(PromptServer, "instance", None) is None:
        return
    routes = PromptServer.instance.routes

    @routes.get(PREFIX + "/data")
    async def _data(request):
        return web.json_response(editor_data())

    @routes.post(PREFIX + "/preview")
    async def _preview(request):
        try:
            payload = await request.json()
        except ValueError:
            return web.json_response({"error": "the request body is not JSON"}, status=400)
        result = preview(payload if isinstance(payload, dict) else {})
        return web.json_response(result, status=400 if "error" in result else 200)
