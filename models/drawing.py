"""Preview pictures: detections drawn on the reference photos (PIL, no OpenCV)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .face_analyzer import Detection

CHOSEN = (60, 220, 90)
OTHER = (250, 190, 40)
MISSING = (235, 60, 60)
# Keypoint colours: eyes, nose, mouth corners (the subject's right side first, as insightface orders them).
KEYPOINT_COLOURS = [(80, 160, 255), (80, 160, 255), (255, 255, 255), (255, 110, 200), (255, 110, 200)]


def _font(image_height: int):
    return _font_of_size(max(12, image_height // 32))


@lru_cache(maxsize=8)
def _font_of_size(size: int):
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


def draw_expression_preview(
    image_rgb: np.ndarray,
    landmarks: np.ndarray | None,
    blendshapes: np.ndarray | None,
    names: tuple[str, ...],
    caption: str = "",
    strongest: int = 8,
) -> np.ndarray:
    """The photo with the face's landmarks dotted, beside a bar chart of its strongest blendshapes.

    ``landmarks`` are normalised (x, y, z); with ``blendshapes`` None the panel only shows the
    caption in red (the image was skipped). The output width is always 1.6 x the photo's, so a batch
    of equal photos gives equal previews.
    """
    height, width = image_rgb.shape[:2]
    panel_width = max(int(width * 0.6), 1)
    picture = Image.new("RGB", (width + panel_width, height), (24, 24, 28))
    picture.paste(Image.fromarray(image_rgb), (0, 0))
    draw = ImageDraw.Draw(picture)
    font = _font(height)
    if landmarks is not None:
        radius = max(1, min(width, height) // 300)
        for x, y in np.asarray(landmarks)[:, :2] * [width, height]:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=LANDMARK_DOT)
    left = width + 6
    if caption:
        draw.text((left, 4), caption, fill=CHOSEN if blendshapes is not None else MISSING, font=font)
    if blendshapes is not None:
        bar_height = max(3, font.size // 2)
        row = font.size + bar_height + 8  # the name and value, with the bar under them
        bar_span = panel_width - 12
        movements = np.asarray(blendshapes)[1:]  # index 0 is "_neutral", not a movement
        for rank, i in enumerate(np.argsort(-movements, kind="stable")[:strongest]):
            y = 8 + font.size + 6 + rank * row
            if y + row > height:
                break
            draw.text((left, y), f"{names[i + 1]} {movements[i]:.2f}", fill=(230, 230, 230), font=font)
            bar_top = y + font.size + 3
            draw.rectangle([left, bar_top, left + float(np.clip(movements[i], 0, 1)) * bar_span, bar_top + bar_height], fill=BAR)
    return np.asarray(picture)
