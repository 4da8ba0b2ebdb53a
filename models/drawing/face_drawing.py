"""GenAffect's face model drawn from 52 blendshapes (the same data the browser's live editor draws).

The model (``data/face_model.json``) is a schematic frontal face: named points at their neutral positions
and, per blendshape, how far it moves which points at weight 1. A face is the neutral points plus the
weighted sum of the moves - linear, so the browser (``js/face_model.js``) and this module compute the same
geometry from the same data, and a test holds them to it. ``python -m models.face_drawing`` (models/face_drawing.py)
draws the preset library with it, no model downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from ..errors import GenAffectInputError, checked_number
from ..expression.batch import BLENDSHAPE_NAMES, NUM_BLENDSHAPES, ExpressionBatch, split_list
from ..expression.expression_edit import SLIDER_NAMES, apply_edits, parse_turns, with_head_turns
from ..expression.expression_library import presets
from ..files.packaged_data import data_path, parsing, read_json
from .pictures import draw_sheet, fit_text, font_of_size, sheet_size

MODEL_FILE = "face_model.json"
MODEL_PATH = data_path(MODEL_FILE)
SHAPE_KINDS = ("polygon", "line", "ellipse")
SUPERSAMPLE = 3  # drawn 3x larger, then reduced: PIL draws without anti-aliasing
MAX_FACE_SIZE = 2048  # pixels a side (drawn at 3x that); larger is a typo


@dataclass(frozen=True)
class FaceModel:
    point_names: tuple[str, ...]
    neutral: np.ndarray  # (P, 2)
    moves: np.ndarray  # (52, P, 2): how far each blendshape at weight 1 moves each point
    shapes: tuple[dict, ...]
    view: tuple[tuple[float, float], tuple[float, float]]  # x range, y range drawn

    def geometry(self, blendshapes) -> np.ndarray:
        """Every point's position, (P, 2), for one vector of 52 blendshapes."""
        weights = np.asarray(blendshapes, dtype=np.float64)
        if weights.shape != (NUM_BLENDSHAPES,):
            raise GenAffectInputError(f"the face model draws one vector of {NUM_BLENDSHAPES} blendshapes, got shape "
                                      f"{weights.shape}.")
        return self.neutral + np.tensordot(weights, self.moves, axes=1)


@lru_cache(maxsize=1)
def face_model_data() -> dict:
    """The face model as stored (what the browser draws from), checked; read once. Do not modify it."""
    data = read_json(MODEL_FILE)
    with parsing(MODEL_FILE):
        parse_face_model(data)
    return data


@lru_cache(maxsize=1)
def face_model() -> FaceModel:
    return parse_face_model(face_model_data())


def parse_face_model(data: dict) -> FaceModel:
    """Check the model's data (every name it uses exists, every blendshape has an entry) and build it."""
    points = data["points"]
    names = tuple(points)
    index = {name: i for i, name in enumerate(names)}
    if set(data["moves"]) != set(BLENDSHAPE_NAMES):
        raise ValueError(f"face model moves must name exactly the {NUM_BLENDSHAPES} blendshapes; differs on "
                         f"{sorted(set(data['moves']) ^ set(BLENDSHAPE_NAMES))}")
    moves = np.zeros((NUM_BLENDSHAPES, len(names), 2))
    for b, blendshape in enumerate(BLENDSHAPE_NAMES):
        for point, delta in data["moves"][blendshape].items():
            if point not in index:
                raise ValueError(f"face model: {blendshape} moves unknown point {point!r}")
            moves[b, index[point]] = delta
    for shape in data["shapes"]:
        unknown = [p for p in shape["points"] if p not in index]
        if shape["kind"] not in SHAPE_KINDS or unknown or (shape["kind"] == "ellipse" and len(shape["points"]) != 4):
            raise ValueError(f"face model shape {shape['name']!r}: kind {shape['kind']!r}, unknown points {unknown}")
    view = data["view"]
    return FaceModel(names, np.array([points[n] for n in names], np.float64), moves, tuple(data["shapes"]),
                     (tuple(view["x"]), tuple(view["y"])))


def long_enough(shape: dict, points: np.ndarray) -> bool:
    """A shape with ``min_length`` (a wrinkle) is drawn only once its line is at least that long (model units)."""
    if "min_length" not in shape:
        return True
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum()) >= shape["min_length"]


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def draw_face(blendshapes, size: int = 256, background=(245, 245, 245)) -> np.ndarray:
    """The face for one vector of 52 blendshapes, as an RGB uint8 array of ``size`` x ``size``."""
    size = checked_number("size", size, whole=True, low=8, high=MAX_FACE_SIZE)
    model = face_model()
    geometry = model.geometry(blendshapes)
    index = {name: i for i, name in enumerate(model.point_names)}
    (x0, x1), (y0, y1) = model.view
    big = size * SUPERSAMPLE
    scale = big / max(x1 - x0, y1 - y0)
    offset = np.array([(big - (x1 - x0) * scale) / 2 - x0 * scale, (big - (y1 - y0) * scale) / 2 - y0 * scale])
    canvas = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(canvas)
    for shape in model.shapes:
        if not long_enough(shape, geometry[[index[p] for p in shape["points"]]]):
            continue
        xy = [tuple(geometry[index[p]] * scale + offset) for p in shape["points"]]
        fill = _hex(shape["fill"]) if "fill" in shape else None
        stroke = _hex(shape["stroke"]) if "stroke" in shape else None
        width = max(1, round(shape.get("width", 0) * scale))
        if shape["kind"] == "polygon":
            draw.polygon(xy, fill=fill)
            if stroke:
                draw.line(xy + xy[:1], fill=stroke, width=width, joint="curve")
        elif shape["kind"] == "line":
            draw.line(xy, fill=stroke, width=width, joint="curve")
        else:  # the ellipse in the box around its four points
            (left, top), (right, bottom) = np.min(xy, axis=0), np.max(xy, axis=0)
            if right - left >= 1 and bottom - top >= 1:
                draw.ellipse((left, top, right, bottom), fill=fill, outline=stroke)
    return np.asarray(canvas.resize((size, size), Image.LANCZOS))


def with_target_glyph(image: np.ndarray, blendshapes, share: float = 0.25) -> np.ndarray:
    """A copy of ``image`` with the face model of ``blendshapes`` (the asked-for expression) inset in its
    top-right corner, ``share`` of its width: a sheet then shows what each face was asked to show."""
    height, width = image.shape[:2]
    size = max(24, int(min(height, width) * share))
    glyph = draw_face(blendshapes, size)
    framed = image.copy()
    framed[2:size + 2, width - size - 2:width - 2] = glyph
    framed[1:size + 3, [width - size - 3, width - 2]] = 255  # a thin white frame
    framed[[1, size + 2], width - size - 3:width - 1] = 255
    return framed


def draw_expressions(batch: ExpressionBatch, size: int = 192, columns: int = 0, title: str = "",
                     prompts: list[str] | None = None, on_progress=None) -> np.ndarray:
    """A labelled sheet of the face model for every expression of a batch (with its prompt text, if given).
    A sheet too large to hold is refused before any face is drawn; ``on_progress(done, total)`` after each face
    (ComfyUI's bar and Cancel)."""
    blendshapes = batch.require("blendshapes", "the face drawing")
    captions = [[label] + ([prompts[i]] if prompts else []) for i, label in enumerate(batch.labels)]
    columns = columns or max(1, int(np.ceil(np.sqrt(len(blendshapes)))))
    sheet_size(len(blendshapes), size, size, columns, len(captions[0]), bool(title))
    faces = []
    for row in blendshapes:
        faces.append(draw_face(row, size))
        if on_progress is not None:
            on_progress(len(faces), len(blendshapes))
    return draw_sheet(faces, captions, columns, title)


def workflow_expressions(workflow: dict) -> tuple[str, ExpressionBatch]:
    """The title (its Read me note's first line) and the expressions a saved ComfyUI workflow names: its
    Expression Presets' names (each once, in order) and its Expression Editors' sliders on a neutral face, each
    once per turn of its Head Turns (labelled; the drawing does not turn); a workflow whose expressions come from
    photos gives a neutral face. A file that is not a workflow as ComfyUI
    saves it is refused, saying what is wrong."""
    nodes = workflow.get("nodes") if isinstance(workflow, dict) else None
    if not isinstance(nodes, list) or not all(isinstance(node, dict) for node in nodes):
        raise GenAffectInputError("this is not a ComfyUI workflow as the frontend saves it (an object whose 'nodes' is "
                                  "a list of nodes); save the workflow again from ComfyUI.")
    try:
        return _workflow_expressions(nodes)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        if isinstance(error, GenAffectInputError):
            raise
        raise GenAffectInputError(f"a node of this workflow is malformed ({type(error).__name__}: {error}); save the "
                                  "workflow again from ComfyUI.") from None


def _workflow_expressions(nodes: list[dict]) -> tuple[str, ExpressionBatch]:
    nodes = sorted(nodes, key=lambda node: node.get("order", 0))
    notes = [node["widgets_values"][0] for node in nodes if node.get("type") == "Note" and node.get("widgets_values")]
    title = notes[0].splitlines()[0].removeprefix("GenAffect - ") if notes else ""
    names, rows, labels, turns = [], [], [], []
    for node in nodes:
        values = node.get("widgets_values") or []
        if node.get("type") == "GenAffectHeadTurns" and values:
            turns += parse_turns(str(values[0]))
        elif node.get("type") == "GenAffectExpressionPreset" and values:
            names = list(dict.fromkeys(names + split_list(str(values[0]))))  # each once, in order
        elif node.get("type") == "GenAffectExpressionEditor" and len(values) >= 1 + len(SLIDER_NAMES):
            # intensity, the sliders, then (saved since the head sliders came) yaw, pitch and roll
            neutral = ExpressionBatch([node.get("title", "edited")], blendshapes=np.zeros((1, NUM_BLENDSHAPES), np.float32))
            edited = apply_edits(neutral, dict(zip(SLIDER_NAMES, values[1:1 + len(SLIDER_NAMES)])), values[0])
            rows.append(edited.blendshapes[0])
            labels.append(edited.labels[0])
    if names:
        library = presets(names, 1.0)
        rows, labels = list(library.blendshapes) + rows, list(library.labels) + labels
    if not rows:
        rows, labels = [np.zeros(NUM_BLENDSHAPES, np.float32)], ["neutral" if turns else "expressions from your photos"]
    batch = ExpressionBatch(labels, blendshapes=np.stack(rows))
    return title, with_head_turns(batch, turns) if turns else batch  # a head-pose sheet: its turns, labelled


def draw_thumbnail(title: str, batch: ExpressionBatch, width: int = 512, height: int = 384) -> np.ndarray:
    """A workflow's template picture: its title over the faces of (up to 8 of) its expressions."""
    faces = batch.blendshapes[:8]
    columns = min(4, len(faces))
    rows = -(-len(faces) // columns)
    title_height = 56
    cell = min(width // columns, (height - title_height) // rows, 200)
    canvas = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(canvas)
    font = font_of_size(18)
    lines = [""]
    for word in title[:4 * width].split():  # two lines at most (4 characters a pixel is more than can show)
        candidate = (lines[-1] + " " + word).strip()
        if draw.textlength(candidate, font=font) > width - 16:
            if len(lines) == 2:
                lines[-1] = candidate  # the second line is full: fit_text cuts it below
                break
            lines.append(word)
        else:
            lines[-1] = candidate
    for n, line in enumerate(lines):
        draw.text((8, 6 + n * 22), fit_text(draw, line, font, width - 16), fill=(40, 40, 40), font=font)
    small = font_of_size(12)
    left0, top0 = (width - columns * cell) // 2, title_height + (height - title_height - rows * cell) // 2
    for i, row in enumerate(faces):
        left, top = left0 + (i % columns) * cell, top0 + (i // columns) * cell
        canvas.paste(Image.fromarray(draw_face(row, cell - 14)), (left + 7, top))
        draw.text((left + 7, top + cell - 14), fit_text(draw, batch.labels[i], small, cell - 10), fill=(60, 60, 60), font=small)
    return np.asarray(canvas)
