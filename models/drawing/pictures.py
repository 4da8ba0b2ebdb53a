"""Preview pictures: detections drawn on the reference photos (PIL, no OpenCV)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import GenAffectInputError
from ..face.face_analyzer import Detection

CHOSEN = (60, 220, 90)
OTHER = (250, 190, 40)
MISSING = (235, 60, 60)
# Keypoint colours: eyes, nose, mouth corners (the subject's right side first, as insightface orders them).
KEYPOINT_COLOURS = [(80, 160, 255), (80, 160, 255), (255, 255, 255), (255, 110, 200), (255, 110, 200)]


def _font(image_height: int):
    return font_of_size(max(12, image_height // 32))


@lru_cache(maxsize=8)
def font_of_size(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def draw_detections(
    image_rgb: np.ndarray,
    detections: list[Detection],
    chosen: Detection | None,
    caption: str = "",
) -> np.ndarray:
    """Boxes, 5 keypoints and scores over a copy of ``image_rgb``; the kept face in green.

    With ``chosen`` None the caption is drawn in red (the image was skipped).
    """
    picture = Image.fromarray(image_rgb)
    draw = ImageDraw.Draw(picture)
    line = max(1, min(picture.size) // 200)
    font = _font(picture.size[1])
    for detection in detections:
        colour = CHOSEN if detection is chosen else OTHER
        x1, y1, x2, y2 = (float(v) for v in detection.box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        radius = max(2, line + 1)
        for (x, y), dot in zip(detection.keypoints, KEYPOINT_COLOURS):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=dot)
        draw.text((x1, max(0.0, y1 - font.size - 2)), f"{detection.score:.2f}", fill=colour, font=font)
    if caption:
        draw.text((4, picture.size[1] - font.size - 4), caption, fill=CHOSEN if chosen is not None else MISSING, font=font)
    return np.asarray(picture)


LANDMARK_DOT = (90, 230, 255)
BAR = (120, 200, 255)
TEXT = (230, 230, 230)
BACKGROUND = (24, 24, 28)


def draw_expression_preview(
    image_rgb: np.ndarray,
    landmarks: np.ndarray | None,
    blendshapes: np.ndarray | None,
    names: tuple[str, ...],
    caption: str = "",
    strongest: int = 8,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The photo with the face's landmarks dotted, beside a bar chart of its strongest blendshapes.

    ``landmarks`` are normalised (x, y, z); with ``blendshapes`` None the panel only shows the
    caption in red (the image was skipped). The output width is always 1.6 x the photo's
    (:func:`expression_preview_shape`), so a batch of equal photos gives equal previews, and a batch
    may draw each into the same ``out`` array. Dots are set with NumPy and texts drawn once: a video
    batch previews at a small fraction of MediaPipe's own time.
    """
    height, width = image_rgb.shape[:2]
    shape = expression_preview_shape(image_rgb.shape)
    panel_width = shape[1] - width
    if out is not None and (out.shape != shape or out.dtype != np.uint8):
        raise ValueError(f"draw_expression_preview draws into {shape} uint8, not {out.shape} {out.dtype}")
    canvas = np.empty(shape, dtype=np.uint8) if out is None else out
    canvas[:, :width] = image_rgb
    canvas[:, width:] = np.full((panel_width, 3), BACKGROUND, np.uint8)  # whole rows: 3 values at a time is 20x slower
    if landmarks is not None:
        dot = max(2, min(width, height) // 256)
        points = np.rint(np.asarray(landmarks)[:, :2] * [width, height]).astype(np.int64)
        offsets = np.arange(dot)  # each dot's dot x dot pixels, every dot in one assignment
        canvas[np.clip(points[:, 1, None, None] + offsets[:, None], 0, height - 1),
               np.clip(points[:, 0, None, None] + offsets, 0, width - 1)] = LANDMARK_DOT
    size = _font(height).size
    left = width + 6
    caption = fit_text(_MEASURE, caption, font_of_size(size), panel_width - 12)  # a label may be any length
    rows = []  # (blendshape, top of its row), the strongest first, as many as fit
    if blendshapes is not None:
        bar_height = max(3, size // 2)
        row = size + bar_height + 8  # the name and value, with the bar under them
        bar_span = panel_width - 12
        movements = np.asarray(blendshapes)[1:]  # index 0 is "_neutral", not a movement
        bar = np.full((panel_width, 3), BAR, np.uint8)  # whole rows, as the panel's background
        for rank, i in enumerate(np.argsort(-movements, kind="stable")[:strongest]):
            y = 8 + size + 6 + rank * row
            if y + row > height:
                break
            rows.append((i, y))
            bar_top = y + size + 3
            drawn = canvas[bar_top:bar_top + bar_height, left:left + 1 + int(min(max(movements[i], 0), 1) * bar_span)]
            drawn[...] = bar[:drawn.shape[1]]
    if caption:
        _put_text(canvas, (left, 4), caption, CHOSEN if blendshapes is not None else MISSING, size)
    for i, y in rows:  # after the bars, which a name's descenders may reach
        _put_text(canvas, (left, y), f"{names[i + 1]} {movements[i]:.2f}", TEXT, size)
    return canvas


# A larger photo is previewed scaled down to this on its longer side: a 12-megapixel photo's full-size preview is a
# 230 MB IMAGE that takes a fifth of a second to draw, and a preview is looked at, not used downstream.
PREVIEW_MAX_SIDE = 1024


def _preview_factor(photo_shape: tuple[int, ...], max_side: int) -> int:
    return -(-max(photo_shape[:2]) // max_side)  # the whole factor that brings the longer side to max_side or less


def preview_size(photo_shape: tuple[int, ...], max_side: int = PREVIEW_MAX_SIDE) -> tuple[int, int]:
    """(height, width) of a photo of ``photo_shape`` in its preview: scaled down by the smallest whole factor that
    brings its longer side to ``max_side`` or less (a box filter of whole pixels: 5x cheaper than a resize)."""
    factor = _preview_factor(photo_shape, max_side)
    height, width = photo_shape[:2]
    return -(-height // factor), -(-width // factor)


def preview_photo(photo_rgb: np.ndarray, max_side: int = PREVIEW_MAX_SIDE) -> np.ndarray:
    """The photo as its preview shows it (:func:`preview_size`)."""
    factor = _preview_factor(photo_rgb.shape, max_side)
    return photo_rgb if factor == 1 else np.asarray(Image.fromarray(photo_rgb).reduce(factor))


def expression_preview_shape(photo_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The shape of :func:`draw_expression_preview`'s picture of a photo: a panel 0.6 x its width beside it."""
    height, width = photo_shape[:2]
    return (height, width + max(int(width * 0.6), 1), 3)


_MEASURE = ImageDraw.Draw(Image.new("L", (1, 1)))  # measures text for fit_text where nothing is drawn yet


@lru_cache(maxsize=4096)
def _text_mask(text: str, size: int) -> np.ndarray:
    """The text's coverage (H, W) in 0..255, rendered once per text and size (names and values repeat across frames)."""
    font = font_of_size(size)
    _, _, right, bottom = font.getbbox(text)
    mask = Image.new("L", (max(int(right), 1), max(int(bottom), 1)), 0)
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    return np.asarray(mask)


def _blend(under: np.ndarray, text: str, size: int, fill) -> np.ndarray:
    """The text in ``fill`` over the uint8 pixels ``under`` (as large as the text or cut to the canvas)."""
    alpha = _text_mask(text, size)[:under.shape[0], :under.shape[1], None].astype(np.float32) / 255.0
    return np.rint(under.astype(np.float32) * (1.0 - alpha) + np.asarray(fill, np.float32) * alpha).astype(np.uint8)


@lru_cache(maxsize=4096)
def _text_on_background(text: str, size: int, fill) -> np.ndarray:
    """The text blended over the panel's plain BACKGROUND once: where it lands on plain background, a copy."""
    return _blend(np.full((*_text_mask(text, size).shape, 3), BACKGROUND, np.uint8), text, size, fill)


def _put_text(canvas: np.ndarray, xy, text: str, fill, size: int) -> None:
    """Blend text into an RGB uint8 array in place."""
    drawn = _text_on_background(text, size, fill)
    x, y = int(xy[0]), int(xy[1])
    h = min(drawn.shape[0], canvas.shape[0] - y)
    w = min(drawn.shape[1], canvas.shape[1] - x)
    if h <= 0 or w <= 0:
        return
    region = canvas[y:y + h, x:x + w]
    on_background = (region == np.full((w, 3), BACKGROUND, np.uint8)).all()
    # else a bar or another text lies under it (large fonts' descenders reach the bar below): blended over them
    region[...] = drawn[:h, :w] if on_background else _blend(region, text, size, fill)


IDENTITY_BAR = (110, 170, 255)
EXPRESSION_BAR = (255, 165, 80)


def draw_metrics_chart(
    summary_lines: list[str],
    labels: list[str],
    identity: list[float | None],
    expression_error: list[float | None] | None = None,
) -> np.ndarray:
    """A bar per image for identity cosine (0..1, blue) and, when given, expression error (orange, own scale).

    Images without a face get a red "no face" instead of bars.
    """
    count = len(labels)
    group = 90
    width = max(640, 60 + group * count)
    height = 420
    picture = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    font = font_of_size(14)
    y = 8
    for line in summary_lines:
        draw.text((10, y), line, fill=TEXT, font=font)
        y += font.size + 4
    legend = [("identity cosine (0..1)", IDENTITY_BAR)]
    errors = [v for v in (expression_error or []) if v is not None]
    error_scale = max(0.25, max(errors)) if errors else 1.0
    if expression_error is not None:
        legend.append((f"expression error (0..{error_scale:.2f})", EXPRESSION_BAR))
    x = 10
    for text, colour in legend:
        draw.rectangle([x, y + 3, x + 12, y + 13], fill=colour)
        draw.text((x + 18, y), text, fill=TEXT, font=font)
        x += 24 + int(draw.textlength(text, font=font)) + 20
    top, bottom = y + font.size + 16, height - 2 * font.size - 12
    span = bottom - top
    draw.line([40, bottom, width - 10, bottom], fill=(120, 120, 120))
    for tick in (0.0, 0.5, 1.0):
        ty = bottom - tick * span
        draw.line([36, ty, 40, ty], fill=(120, 120, 120))
        draw.text((6, ty - font.size / 2), f"{tick:.1f}", fill=(160, 160, 160), font=font)
    bar = 28 if expression_error is not None else 50
    for i, label in enumerate(labels):
        left = 50 + i * group
        value = identity[i]
        if value is None:
            draw.text((left, bottom - font.size - 4), "no face", fill=MISSING, font=font)
        else:
            draw.rectangle([left, bottom - max(value, 0.0) * span, left + bar, bottom], fill=IDENTITY_BAR)
            if expression_error is not None and expression_error[i] is not None:
                height_fraction = min(expression_error[i] / error_scale, 1.0)
                draw.rectangle([left + bar + 4, bottom - height_fraction * span, left + 2 * bar + 4, bottom], fill=EXPRESSION_BAR)
        draw.text((left, bottom + 6), label[:12], fill=TEXT, font=font)
    return np.asarray(picture)


MAX_SHEET_PIXELS = 64_000_000  # ~190 MB as RGB and 770 MB as ComfyUI's float IMAGE: beyond it, refuse, not swap


def sheet_size(count: int, height: int, width: int, columns: int, caption_lines: int, title: bool,
               padding: int = 8) -> tuple[int, int]:
    """(width, height) of the sheet :func:`draw_sheet` lays out, refused beyond :data:`MAX_SHEET_PIXELS` before
    anything is drawn."""
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    font_size = font_of_size(max(12, height // 22)).size
    caption_height = caption_lines * (font_size + 4) + padding if caption_lines else 0
    title_height = font_size + 2 * padding if title else 0
    size = (columns * (width + padding) + padding, title_height + rows * (height + caption_height + padding) + padding)
    if size[0] * size[1] > MAX_SHEET_PIXELS:
        raise GenAffectInputError(
            f"{count} images of {width}x{height} in {columns} columns make a {size[0]}x{size[1]} sheet "
            f"({size[0] * size[1] / 1e6:.0f} megapixels); the most is {MAX_SHEET_PIXELS / 1e6:.0f}. Draw fewer or "
            "smaller images, or split the batch.")
    return size


def draw_sheet(
    images_rgb: list[np.ndarray],
    captions: list[list[str]],
    columns: int,
    title: str = "",
    padding: int = 8,
) -> np.ndarray:
    """Equal-sized images in a grid, each with its caption lines underneath, and an optional title; every text
    is cut to the width it has."""
    count = len(images_rgb)
    height, width = images_rgb[0].shape[:2]
    columns = max(1, min(columns, count))
    caption_lines = max(len(lines) for lines in captions) if captions else 0
    sheet_width, sheet_height = sheet_size(count, height, width, columns, caption_lines, bool(title), padding)
    font = font_of_size(max(12, height // 22))
    line_height = font.size + 4
    caption_height = caption_lines * line_height + padding if caption_lines else 0
    title_height = font.size + 2 * padding if title else 0
    cell_width, cell_height = width + padding, height + caption_height + padding
    sheet = Image.new("RGB", (sheet_width, sheet_height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((padding, padding), fit_text(draw, title, font, sheet_width - 2 * padding), fill=TEXT, font=font)
    for i, image in enumerate(images_rgb):
        left = padding + (i % columns) * cell_width
        top = title_height + padding + (i // columns) * cell_height
        sheet.paste(Image.fromarray(image), (left, top))
        for n, line in enumerate(captions[i] if captions else []):
            draw.text((left, top + height + padding // 2 + n * line_height), fit_text(draw, line, font, width), fill=TEXT, font=font)
    return np.asarray(sheet)


ELLIPSIS = "..."


def fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis so that it is no wider than ``width`` pixels, in O(log n) measurements: a
    binary search over the length of the kept prefix. Only the first 2 x ``width`` characters are searched: a
    longer prefix would need characters under half a pixel wide (zero-width marks are then cut, which only
    shortens what is shown)."""
    width = max(int(width), 0)
    searched = text[:2 * width + 1]
    if len(searched) == len(text) and draw.textlength(text, font=font) <= width:
        return text
    low, high = 0, len(searched) - (len(searched) == len(text))  # text[:low] + ... fits (or low is 0)
    while low < high:
        middle = (low + high + 1) // 2
        if draw.textlength(searched[:middle] + ELLIPSIS, font=font) <= width:
            low = middle
        else:
            high = middle - 1
    return searched[:low] + ELLIPSIS


def draw_numbered_faces(image_rgb: np.ndarray, faces: list, rows: dict[int, int], caption: str = "") -> np.ndarray:
    """Every listed face (``models/face/face_listing.ListedFace``) boxed with its number; chosen ones in green with
    the expression row they get (``rows``: id(face) -> row), the others in amber."""
    picture = Image.fromarray(image_rgb)
    draw = ImageDraw.Draw(picture)
    line = max(1, min(picture.size) // 250)
    for face in faces:
        row = rows.get(id(face))
        colour = CHOSEN if row is not None else OTHER
        x1, y1, x2, y2 = (float(v) for v in face.box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line if row is None else 2 * line)
        font = font_of_size(int(max(12, min(48, (x2 - x1) / 3))))
        label = f"{face.number}" + ("" if row is None else f" -> {row}")
        if face.similarity is not None:
            label += f" ({face.similarity:.2f})"
        draw.text((x1, max(0.0, y1 - font.size - 2)), label, fill=colour, font=font)
    if caption:
        font = _font(picture.size[1])
        draw.text((4, picture.size[1] - font.size - 4), caption, fill=CHOSEN if rows else MISSING, font=font)
    return np.asarray(picture)


CURVE_COLOURS = [(110, 170, 255), (255, 165, 80), (120, 220, 140), (235, 110, 200), (240, 220, 90), (160, 140, 255)]


def draw_curves(title: str, curves: list[tuple[str, np.ndarray, int, bool]], frames: int, value_range=(0.0, 1.0),
                marks: list[int] | None = None, width: int = 960, height: int = 360) -> np.ndarray:
    """Curves over frames: each ``(label, values (frames,), colour index, dashed)``, NaN where a curve has no value
    (drawn as a break); ``marks``: frames to flag in red along the bottom (e.g. no face). The colour index pairs a
    solid curve with its dashed partner (expected vs measured, as read vs smoothed)."""
    picture = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    font = font_of_size(14)
    draw.text((10, 8), title, fill=TEXT, font=font)
    x = 10
    legend_y = 12 + font.size
    for label, _, colour, dashed in curves:
        fill = CURVE_COLOURS[colour % len(CURVE_COLOURS)]
        for dx in range(0, 24, 6 if dashed else 24):
            draw.line([x + dx, legend_y + 8, x + dx + (3 if dashed else 24), legend_y + 8], fill=fill, width=2)
        draw.text((x + 28, legend_y), label, fill=TEXT, font=font)
        x += 40 + int(draw.textlength(label, font=font))
        if x > width - 150:
            x, legend_y = 10, legend_y + font.size + 4
    top, bottom, left, right = legend_y + font.size + 12, height - font.size - 14, 50, width - 12
    low, high = value_range
    draw.rectangle([left, top, right, bottom], outline=(90, 90, 90))
    for tick in (low, (low + high) / 2, high):
        y = bottom - (tick - low) / (high - low) * (bottom - top)
        draw.text((6, y - font.size / 2), f"{tick:g}", fill=(160, 160, 160), font=font)
    span = max(frames - 1, 1)
    to_x = lambda t: left + t / span * (right - left)  # noqa: E731
    to_y = lambda v: bottom - (min(max(v, low), high) - low) / (high - low) * (bottom - top)  # noqa: E731
    for t in marks or []:
        draw.line([to_x(t), bottom - 6, to_x(t), bottom], fill=MISSING, width=2)
    for _, values, colour, dashed in curves:
        fill = CURVE_COLOURS[colour % len(CURVE_COLOURS)]
        for t in range(len(values) - 1):
            a, b = float(values[t]), float(values[t + 1])
            if not (np.isfinite(a) and np.isfinite(b)) or (dashed and t % 2):
                continue
            draw.line([to_x(t), to_y(a), to_x(t + 1), to_y(b)], fill=fill, width=2)
    for t in sorted({0, frames - 1, frames // 2}):
        draw.text((to_x(t) - 8, bottom + 4), str(t), fill=(160, 160, 160), font=font)
    return np.asarray(picture)


def draw_confusion_chart(summary_lines: list[str], confusion: dict[str, dict[str, int]]) -> np.ndarray:
    """The summary above a confusion matrix (rows: what each face was aimed at; columns: what the judge read), each
    cell shaded by its share of the row, the diagonal green."""
    rows = list(confusion)
    columns = list(next(iter(confusion.values()))) if confusion else []
    font = font_of_size(14)
    cell, label_width = 64, 110
    top = 16 + len(summary_lines) * (font.size + 4) + 30
    width = max(640, label_width + cell * len(columns) + 20)
    height = top + cell * len(rows) + 20
    picture = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    y = 8
    for line in summary_lines:
        draw.text((10, y), fit_text(draw, line, font, width - 20), fill=TEXT, font=font)
        y += font.size + 4
    for j, name in enumerate(columns):
        draw.text((label_width + j * cell + 4, top - 22), name[:8], fill=TEXT, font=font)
    for i, name in enumerate(rows):
        total = max(sum(confusion[name].values()), 1)
        draw.text((10, top + i * cell + cell // 2 - 8), name[:12], fill=TEXT, font=font)
        for j, column in enumerate(columns):
            count = confusion[name][column]
            share = count / total
            base = (60, 200, 110) if column == name else (235, 90, 70)
            fill = tuple(int(BACKGROUND[k] + share * (base[k] - BACKGROUND[k])) for k in range(3))
            box = [label_width + j * cell, top + i * cell, label_width + (j + 1) * cell - 2, top + (i + 1) * cell - 2]
            draw.rectangle(box, fill=fill)
            if count:
                draw.text((box[0] + 6, box[1] + cell // 2 - 8), f"{count}", fill=TEXT, font=font)
    return np.asarray(picture)
