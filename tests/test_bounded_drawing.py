"""Drawing takes bounded time and memory whatever the length of a label, title or batch: text is cut to its width in
O(log n) measurements (it was cut one character at a time: 66 s for 8,000 characters, and Cancel could not stop
it), a sheet too large to hold is refused before any face is drawn, and long loops report progress, where ComfyUI's
Cancel takes effect."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from genaffect.models.drawing import face_drawing, pictures
from genaffect.models.errors import GenAffectInputError
from genaffect.models.expression.batch import ExpressionBatch
from genaffect.nodes.evaluation_nodes import GenAffectExpressionSheet
from genaffect.nodes.face_drawing_nodes import GenAffectDrawExpressions
from PIL import Image, ImageDraw

LABEL = "x" * 20_000


@pytest.fixture
def measurements(monkeypatch):
    """How many times text is measured (PIL's textlength: one layout of the whole string each)."""
    calls = []
    real = ImageDraw.ImageDraw.textlength

    def counted(self, text, *args, **kwargs):
        calls.append(len(text))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "textlength", counted)
    return calls


@pytest.mark.parametrize("length", [20_000, 2_000_000])
def test_a_long_text_is_cut_to_its_width_in_a_logarithmic_number_of_measurements(length, measurements):
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = pictures.font_of_size(14)
    cut = pictures.fit_text(draw, "y" * length, font, 300)
    assert cut.endswith("...") and draw.textlength(cut, font=font) <= 300
    measurements.pop()  # the check above
    assert len(measurements) <= 2 + math.ceil(math.log2(2 * 300 + 2))  # never more than the prefix search needs
    assert max(measurements) <= 2 * 300 + 1 + 3  # and never the whole string


def test_cutting_gives_the_longest_prefix_that_fits():
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = pictures.font_of_size(14)
    text = "GenAffect draws every expression of the batch"
    assert pictures.fit_text(draw, text, font, 10_000) == text
    cut = pictures.fit_text(draw, text, font, 120)
    assert text.startswith(cut[:-3]) and draw.textlength(cut, font=font) <= 120
    assert draw.textlength(text[:len(cut) - 2] + "...", font=font) > 120  # one more character would not fit


def test_a_20000_character_label_and_title_are_drawn_in_bounded_measurements_and_memory(measurements):
    batch = ExpressionBatch([LABEL], blendshapes=np.zeros((1, 52), np.float32))
    tracemalloc.start()
    sheet = GenAffectDrawExpressions().draw(batch, 64, 0, True, LABEL)[0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sheet.shape[0] == 1 and peak < 64e6
    assert len(measurements) < 60 and max(measurements) < 1000  # label, prompt and title: a few dozen short ones
    measurements.clear()
    frames = __import__("torch").rand(2, 64, 64, 3)
    GenAffectExpressionSheet().build(frames, 0, LABEL, labels=f"{LABEL}, {LABEL}")
    assert len(measurements) < 60 and max(measurements) < 1000


def test_a_preview_caption_and_a_thumbnail_title_of_any_length_are_cut(measurements):
    image = np.zeros((128, 128, 3), np.uint8)
    preview = pictures.draw_expression_preview(image, None, None, (), "#0 " + "z" * 1_000_000)
    assert preview.shape == (128, 204, 3) and max(measurements) < 1000
    measurements.clear()
    title = " ".join(["word"] * 20_000)
    thumbnail = face_drawing.draw_thumbnail(title, ExpressionBatch(["a"], blendshapes=np.zeros((1, 52), np.float32)))
    assert thumbnail.shape == (384, 512, 3) and len(measurements) < 200


def test_a_sheet_too_large_to_hold_is_refused_before_any_face_is_drawn(monkeypatch):
    drawn = []
    monkeypatch.setattr(face_drawing, "draw_face", lambda row, size: drawn.append(size))
    batch = ExpressionBatch([f"face {i}" for i in range(1000)], blendshapes=np.zeros((1000, 52), np.float32))
    with pytest.raises(GenAffectInputError, match=r"megapixels\); the most is 64. Draw fewer or smaller"):
        face_drawing.draw_expressions(batch, 1024)
    assert drawn == []


def test_drawing_many_faces_reports_progress_after_each_so_cancel_stops_it():
    batch = ExpressionBatch(["a"] * 6, blendshapes=np.zeros((6, 52), np.float32))
    seen = []

    class Cancelled(Exception):
        pass

    def on_progress(done, total):
        seen.append((done, total))
        if done == 2:
            raise Cancelled  # ComfyUI's Cancel raises from the progress callback

    with pytest.raises(Cancelled):
        face_drawing.draw_expressions(batch, 64, on_progress=on_progress)
    assert seen == [(1, 6), (2, 6)]
