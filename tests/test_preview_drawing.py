"""Estimate Expression's preview, drawn fast (whole-row fills, one assignment for every landmark dot, text copied
where it lands on the plain panel), is pixel for pixel the picture of drawing each element in turn: the photo, the
dots, the bars, then each text blended over whatever lies under it. The conversion back to IMAGE (cast, then scaled in
place) gives the same floats as scaling the uint8 frame at once."""

from __future__ import annotations

import numpy as np
import pytest
from genaffect.models.drawing import pictures
from genaffect.models.expression.batch import BLENDSHAPE_NAMES
from genaffect.models.images import rgb_uint8_to_image_batch


def drawn_element_by_element(image_rgb, landmarks, blendshapes, names, caption="", strongest=8):
    """The preview as first written: every fill, dot and text on its own, each text blended in float."""
    height, width = image_rgb.shape[:2]
    panel_width = max(int(width * 0.6), 1)
    canvas = np.empty((height, width + panel_width, 3), dtype=np.uint8)
    canvas[:, :width] = image_rgb
    canvas[:, width:] = pictures.BACKGROUND
    if landmarks is not None:
        dot = max(2, min(width, height) // 256)
        points = np.rint(np.asarray(landmarks)[:, :2] * [width, height]).astype(np.int64)
        for dy in range(dot):
            for dx in range(dot):
                canvas[np.clip(points[:, 1] + dy, 0, height - 1), np.clip(points[:, 0] + dx, 0, width - 1)] = pictures.LANDMARK_DOT
    size = pictures._font(height).size
    left = width + 6
    caption = pictures.fit_text(pictures._MEASURE, caption, pictures.font_of_size(size), panel_width - 12)
    texts = []
    if blendshapes is not None:
        bar_height = max(3, size // 2)
        row = size + bar_height + 8
        movements = np.asarray(blendshapes)[1:]
        for rank, i in enumerate(np.argsort(-movements, kind="stable")[:strongest]):
            y = 8 + size + 6 + rank * row
            if y + row > height:
                break
            bar_top = y + size + 3
            canvas[bar_top:bar_top + bar_height, left:left + 1 + int(np.clip(movements[i], 0, 1) * (panel_width - 12))] = pictures.BAR
            texts.append(((left, y), f"{names[i + 1]} {movements[i]:.2f}", pictures.TEXT))
    if caption:
        texts.insert(0, ((left, 4), caption, pictures.CHOSEN if blendshapes is not None else pictures.MISSING))
    for (x, y), text, fill in texts:
        alpha = pictures._text_mask(text, size).astype(np.float32)[..., None] / 255.0
        h, w = min(alpha.shape[0], height - y), min(alpha.shape[1], canvas.shape[1] - x)
        if h > 0 and w > 0:
            region = canvas[y:y + h, x:x + w].astype(np.float32)
            a = alpha[:h, :w]
            canvas[y:y + h, x:x + w] = np.rint(region * (1.0 - a) + np.asarray(fill, np.float32) * a).astype(np.uint8)
    return canvas


CAPTIONS = ["", "#0 smile", "#2 " + "a label far too long for the panel " * 4, "#1 skipped: no face detected"]


# 1024 and 2000 rows: the font is large enough that descenders reach the bar below (the blended path)
@pytest.mark.parametrize("height, width", [(32, 32), (48, 64), (300, 100), (333, 517), (512, 512), (1024, 768), (2000, 1500)])
def test_the_fast_preview_is_pixel_identical_to_drawing_each_element_in_turn(height, width):
    rng = np.random.default_rng(height * width)
    photo = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    landmarks = rng.random((478, 3)).astype(np.float32)
    beyond = landmarks.copy()
    beyond[:, :2] = rng.uniform(-0.2, 1.2, (478, 2))  # dots past the edges are clipped to them
    blendshapes = rng.random(52).astype(np.float32)
    extreme = rng.uniform(-0.1, 1.3, 52).astype(np.float32)
    extreme[5:9] = extreme[4]  # ties keep their order; values outside 0..1 give empty and full bars
    for caption in CAPTIONS:
        for marks, scores in ((landmarks, blendshapes), (beyond, extreme), (None, None)):
            for strongest in (8, 60):
                expected = drawn_element_by_element(photo, marks, scores, BLENDSHAPE_NAMES, caption, strongest)
                drawn = pictures.draw_expression_preview(photo, marks, scores, BLENDSHAPE_NAMES, caption, strongest)
                assert drawn.dtype == np.uint8 and np.array_equal(drawn, expected), (caption, strongest)


def test_text_over_a_bar_is_blended_over_the_bar_not_copied_from_the_plain_panel():
    photo = np.zeros((1024, 1024, 3), np.uint8)
    scores = np.zeros(52, np.float32)
    scores[1:] = 0.99  # bars nearly full, under every name
    scores[BLENDSHAPE_NAMES.index("jawOpen")] = 1.0  # the strongest, drawn first: j and p descend
    drawn = pictures.draw_expression_preview(photo, None, scores, BLENDSHAPE_NAMES, "#0")
    assert np.array_equal(drawn, drawn_element_by_element(photo, None, scores, BLENDSHAPE_NAMES, "#0"))
    size = pictures._font(1024).size
    assert pictures._text_mask("jawOpen 1.00", size).shape[0] > size + 3  # the case in question: it reaches its bar


@pytest.mark.parametrize("height, width", [(1, 1), (7, 5), (512, 819)])
def test_uint8_to_image_batch_gives_each_frame_scaled_at_once(height, width):
    rng = np.random.default_rng(width)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(3)]
    batch = rgb_uint8_to_image_batch(frames)
    assert batch.dtype.is_floating_point and batch.is_contiguous() and batch.shape == (3, height, width, 3)
    for frame, converted in zip(frames, batch.numpy()):
        assert np.array_equal(converted, np.multiply(frame, np.float32(1.0 / 255.0)))


def test_a_preview_drawn_over_the_previous_one_is_the_same_as_one_drawn_fresh():
    rng = np.random.default_rng(7)
    photos = [rng.integers(0, 256, (256, 320, 3), dtype=np.uint8) for _ in range(3)]
    marks, scores = rng.random((478, 3)).astype(np.float32), rng.random(52).astype(np.float32)
    canvas = pictures.draw_expression_preview(photos[0], marks, scores, BLENDSHAPE_NAMES, "#0 " + "long label " * 20)
    for photo, args in ((photos[1], (None, None, BLENDSHAPE_NAMES, "#1 skipped")), (photos[2], (marks[::-1], scores[::-1], BLENDSHAPE_NAMES, "#2"))):
        fresh = pictures.draw_expression_preview(photo, *args)
        assert pictures.draw_expression_preview(photo, *args, out=canvas) is canvas
        assert np.array_equal(canvas, fresh)
    with pytest.raises(ValueError, match="draws into"):
        pictures.draw_expression_preview(photos[0], None, None, BLENDSHAPE_NAMES, out=np.empty((256, 320, 3), np.uint8))
