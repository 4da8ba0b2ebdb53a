"""The live expression editor's server side: what the browser (js/expression_editor.js) asks while sliders
move, with no run queued. The blendshapes come from the nodes' own code, so the drawing shows exactly what
the node will output; the face model and the face-motion model are data (models/data/face_model.json,
face_motion.json); a photo's face is read once (editor_photo.py) and warped in the browser.

ComfyUI accepts request bodies up to 100 MB and has no authentication by default, and its event loop serves
every user: a request is capped before anything is built from it (:data:`MAX_BODY`, :data:`MAX_PREVIEW`,
:data:`MAX_PHOTO_REQUEST`), and the work runs in a thread, never on the loop. A malformed request is answered
400 with what is wrong; a damaged pack answers 500 with how to restore it.
"""

from __future__ import annotations

import json

from ..models.drawing.face_drawing import face_model_data
from ..models.errors import GenAffectInputError, PackDataError
from ..models.expression import expression_edit, expression_library
from ..models.expression.batch import BLENDSHAPE_NAMES, split_list
from ..models.expression.face_motion import face_motion_data
from . import editor_photo
from .expression_nodes import GenAffectExpressionEditor, GenAffectExpressionPreset

PREFIX = "/genaffect/expression_editor"
MAX_PREVIEW = 64  # expressions drawn at most: a preset list is typed by hand
MAX_BODY = 64 * 1024  # bytes: the widgets' values are a few hundred; ComfyUI itself would take 100 MB
PREVIEWED = {cls.__name__: cls for cls in (GenAffectExpressionEditor, GenAffectExpressionPreset)}
MAX_PHOTO_REQUEST = 4096  # bytes of a photo request's body: a file name


def slider_groups() -> list[dict]:
    """The Editor's sliders as its panel shows them: groups in order, each slider with its artist name and what
    it drives (the widget names stay those saved workflows hold)."""
    readable = set(expression_library.readable_blendshapes())
    groups = {region: [] for region in expression_edit.REGIONS}
    for slider in expression_edit.SLIDERS:
        drives = list(slider.adds + slider.subtracts)
        groups[slider.region].append({
            "name": slider.name, "label": slider.label, "tooltip": slider.tooltip, "blendshapes": drives,
            "min": -1.0 if slider.subtracts else 0.0, "max": 1.0, "step": 0.01,
            "moves_photos": any(shape in readable for shape in drives)})
    limit = expression_edit.HEAD_LIMIT_DEGREES
    groups["head"] = [{"name": s.name, "label": s.label, "tooltip": s.tooltip, "blendshapes": [], "min": -limit,
                       "max": limit, "step": 0.5, "moves_photos": True} for s in expression_edit.HEAD_SLIDERS]
    return [{"region": region, "sliders": sliders} for region, sliders in groups.items()]


def editor_data() -> dict:
    """Everything the editor draws with: the face model, the blendshape order, every preset and its sliders."""
    names = expression_library.preset_names()
    batch = expression_library.presets(names, 1.0)
    presets = [{"name": name, "tags": list(expression_library.library()[name].tags), "blendshapes": row.tolist(),
                "estimator_blendshapes": target.tolist(), "sliders": expression_edit.sliders_from_blendshapes(row)}
               for name, row, target in zip(names, batch.blendshapes, batch.estimator_blendshapes)]
    return {"model": face_model_data(), "blendshape_names": list(BLENDSHAPE_NAMES), "presets": presets,
            "sliders": list(expression_edit.SLIDER_NAMES), "slider_groups": slider_groups()}


def _widget_values(cls, inputs) -> dict:
    """The node's widget values from a request, a missing or null value its default. Other names are not the
    node's inputs (the frontend may add widgets of its own, like the editor's face) and are left out."""
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise GenAffectInputError(f"inputs must be an object of widget values, got a {type(inputs).__name__}.")
    types = cls.INPUT_TYPES()
    declared = {**types.get("required", {}), **types.get("optional", {})}
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
        return _shown(GenAffectExpressionEditor().edit(**values)[0], count=1)
    if not isinstance(values["expressions"], str):
        raise GenAffectInputError(f"expressions must be text (names separated by commas), got a "
                                  f"{type(values['expressions']).__name__}.")
    names = split_list(values["expressions"])
    expression_library.check_names(names)  # every name, as the node would; only the first few are built
    batch = GenAffectExpressionPreset().build("\n".join(names[:MAX_PREVIEW]), values["intensity"])[0]
    return _shown(batch, count=len(names))


def _shown(batch, count: int) -> dict:
    """What the browser draws of ``batch``: the expressions and, for a photo, what it is warped to (as Warp
    Expression does: the estimator-space targets and the head turn); ``count`` the expressions the node outputs."""
    return {"labels": list(batch.labels), "blendshapes": batch.blendshapes.tolist(),
            "estimator_blendshapes": batch.estimator_space("the live preview").tolist(),
            "head_turn": batch.filled("head_turn").tolist(), "count": count}


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


def photo(payload) -> tuple[dict, int]:
    """The face of the photo a request names (see editor_photo.read_face), or {"error": why} and the status."""
    try:
        return editor_photo.read_face(payload), 200
    except editor_photo.PhotoError as error:
        return {"error": str(error)}, error.status


def answer_photo(body: bytes) -> tuple[dict, int]:
    """(JSON answer, HTTP status) for a photo request's body (at most :data:`MAX_PHOTO_REQUEST` bytes)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:
        return {"error": f"the request body is not JSON ({type(error).__name__})."}, 400
    return photo(payload)


def register_routes() -> None:
    """Add the editor's routes to ComfyUI's server (nothing to do when it is not running, e.g. in tests)."""
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

    @routes.get(PREFIX + "/face_motion")
    async def _face_motion(request):
        return web.json_response(face_motion_data(), headers={"Cache-Control": "max-age=3600"})

    @routes.post(PREFIX + "/photo")
    async def _photo(request):  # MediaPipe takes ~50-300 ms: in the thread too
        body = await _read_capped(request, MAX_PHOTO_REQUEST)
        if body is None:
            return web.json_response({"error": f"a photo request is a file name of at most {MAX_PHOTO_REQUEST} bytes "
                                               "of JSON"}, status=413)
        return await in_thread(answer_photo, body)

    @routes.post(PREFIX + "/preview")
    async def _preview(request):
        body = await _read_capped(request, MAX_BODY)
        if body is None:
            return web.json_response({"error": f"the request is larger than {MAX_BODY // 1024} KB; the preview takes "
                                               "a node's widget values."}, status=413)
        return await in_thread(answer_preview, body)
