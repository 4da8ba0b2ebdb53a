"""The live expression editor's server side: what the browser (js/expression_editor.js) asks while sliders
move, with no run queued. The blendshapes come from the nodes' own code, so the drawing shows exactly what
the node will output; the face model itself is data (models/data/face_model.json).

ComfyUI accepts request bodies up to 100 MB and has no authentication by default, and its event loop serves
every user: a request is capped before anything is built from it (:data:`MAX_BODY`, :data:`MAX_PREVIEW`), and
the work runs in a thread, never on the loop. A malformed request is answered 400 with what is wrong; a damaged
pack answers 500 with how to restore it.
"""

from __future__ import annotations

import json

from ..models.drawing.face_drawing import face_model_data
from ..models.errors import GenAffectInputError, PackDataError
from ..models.expression import expression_edit, expression_library
from ..models.expression.batch import BLENDSHAPE_NAMES, split_list
from .expression_nodes import GenAffectExpressionEditor, GenAffectExpressionPreset

PREFIX = "/genaffect/expression_editor"
MAX_PREVIEW = 64  # expressions drawn at most: a preset list is typed by hand
MAX_BODY = 64 * 1024  # bytes: the widgets' values are a few hundred; ComfyUI itself would take 100 MB
PREVIEWED = {cls.__name__: cls for cls in (GenAffectExpressionEditor, GenAffectExpressionPreset)}


def editor_data() -> dict:
    """Everything the editor draws with: the face model, the blendshape order, every preset and its sliders."""
    names = expression_library.preset_names()
    batch = expression_library.presets(names, 1.0)
    presets = [{"name": name, "tags": list(expression_library.library()[name].tags), "blendshapes": row.tolist(),
                "sliders": expression_edit.sliders_from_blendshapes(row)}
               for name, row in zip(names, batch.blendshapes)]
    return {"model": face_model_data(), "blendshape_names": list(BLENDSHAPE_NAMES), "presets": presets,
            "sliders": list(expression_edit.SLIDER_NAMES)}


def _widget_values(cls, inputs) -> dict:
    """The node's widget values from a request, a missing or null value its default. Other names are not the
    node's inputs (the frontend may add widgets of its own, like the editor's face) and are left out."""
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise GenAffectInputError(f"inputs must be an object of widget values, got a {type(inputs).__name__}.")
    declared = {**cls.INPUT_TYPES().get("required", {}), **cls.INPUT_TYPES().get("optional", {})}
    widgets = {name: spec for name, spec in declared.items() if spec[0] in ("FLOAT", "INT", "STRING")}
    return {name: inputs[name] if inputs.get(name) is not None else spec[1].get("default")
            for name, spec in widgets.items()}


def preview(payload) -> dict:
    """The expressions an Expression Editor or Preset node would output for the widget values in ``payload``
    ({"node": class name, "inputs": {widget: value}}), at most :data:`MAX_PREVIEW` of them built. An input the node
    would refuse gives {"error": why} (the nodes check their own numbers)."""
    if not isinstance(payload, dict):
        raise GenAffectInputError(f"the request must be a JSON object {{node, inputs}}, got a {type(payload).__name__}.")
    node = payload.get("node")
    cls = PREVIEWED.get(node) if isinstance(node, str) else None
    if cls is None:
        raise GenAffectInputError(f"no live preview for node {node!r:.80}; it draws {' and '.join(PREVIEWED)}.")
    values = _widget_values(cls, payload.get("inputs"))
    if cls is GenAffectExpressionEditor:
        batch = GenAffectExpressionEditor().edit(**values)[0]
        return {"labels": list(batch.labels), "blendshapes": batch.blendshapes.tolist(), "count": len(batch)}
    if not isinstance(values["expressions"], str):
        raise GenAffectInputError(f"expressions must be text (names separated by commas), got a "
                                  f"{type(values['expressions']).__name__}.")
    names = split_list(values["expressions"])
    expression_library.check_names(names)  # every name, as the node would; only the first few are built
    batch = GenAffectExpressionPreset().build("\n".join(names[:MAX_PREVIEW]), values["intensity"])[0]
    return {"labels": list(batch.labels), "blendshapes": batch.blendshapes.tolist(), "count": len(names)}


def answer_preview(body: bytes) -> tuple[dict, int]:
    """(JSON answer, HTTP status) for a preview request's body (at most :data:`MAX_BODY` bytes)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, or nested too deep
        return {"error": f"the request body is not JSON ({type(error).__name__})."}, 400
    return _answer(preview, payload)


def answer_data() -> tuple[dict, int]:
    return _answer(editor_data)


def _answer(work, *args) -> tuple[dict, int]:
    try:
        return work(*args), 200
    except PackDataError as error:  # the pack is damaged, not the request
        return {"error": str(error)}, 500
    except GenAffectInputError as error:
        return {"error": str(error)}, 400


async def _read_capped(request, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (read no further than that)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def register_routes() -> None:
    """Add the editor's two routes to ComfyUI's server (nothing to do when it is not running, e.g. in tests)."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return
    if getattr(PromptServer, "instance", None) is None:
        return
    import asyncio

    routes = PromptServer.instance.routes

    async def in_thread(work, *args):  # the event loop serves every other request meanwhile
        answer, status = await asyncio.get_running_loop().run_in_executor(None, work, *args)
        return web.json_response(answer, status=status)

    @routes.get(PREFIX + "/data")
    async def _data(request):
        return await in_thread(answer_data)

    @routes.post(PREFIX + "/preview")
    async def _preview(request):
        body = await _read_capped(request, MAX_BODY)
        if body is None:
            return web.json_response({"error": f"the request is larger than {MAX_BODY // 1024} KB; the preview takes "
                                               "a node's widget values."}, status=413)
        return await in_thread(answer_preview, body)
