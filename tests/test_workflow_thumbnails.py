"""Every example workflow has its template picture (ComfyUI's template browser asks for <name>.jpg beside the
.json), and the picture shows the expressions the workflow names (python -m models.face_drawing --workflow)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from genaffect.models.drawing.face_drawing import draw_thumbnail, workflow_expressions
from PIL import Image

WORKFLOWS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows")
NAMES = sorted(f[:-5] for f in os.listdir(WORKFLOWS) if f.endswith(".json"))


@pytest.mark.parametrize("name", NAMES)
def test_each_workflow_has_an_up_to_date_jpeg_thumbnail(name):
    path = os.path.join(WORKFLOWS, name + ".jpg")
    assert os.path.isfile(path), f"make it: python -m models.face_drawing --workflow workflows/{name}.json --out {path} --overwrite"
    with Image.open(path) as picture:
        assert picture.format == "JPEG" and picture.size == (512, 384)
        shown = np.asarray(picture.convert("RGB"), dtype=np.int16)
    assert os.path.getsize(path) < 100_000
    with open(os.path.join(WORKFLOWS, name + ".json"), encoding="utf-8") as handle:
        expected = draw_thumbnail(*workflow_expressions(json.load(handle))).astype(np.int16)
    assert np.abs(shown - expected).mean() < 3, "the workflow changed: redraw its thumbnail (command above)"


def test_thumbnail_expressions_come_from_the_workflows_presets_and_editors():
    with open(os.path.join(WORKFLOWS, "expression_transition_prompts.json"), encoding="utf-8") as handle:
        title, batch = workflow_expressions(json.load(handle))
    assert title == "expression transition to prompts"
    assert batch.labels == ["neutral", "happy", "Make B a little lopsided"]
    with open(os.path.join(WORKFLOWS, "identity_from_photos.json"), encoding="utf-8") as handle:
        _, batch = workflow_expressions(json.load(handle))
    assert len(batch) == 1 and not batch.blendshapes.any()  # no expressions named: a neutral face


def test_a_head_pose_sheets_picture_names_its_turns():
    with open(os.path.join(WORKFLOWS, "head_pose_sheet.json"), encoding="utf-8") as handle:
        title, batch = workflow_expressions(json.load(handle))
    assert title.startswith("a head-pose sheet")
    assert batch.labels == ["neutral, straight", "neutral, yaw -20", "neutral, yaw 20", "neutral, pitch -10",
                            "neutral, pitch 10", "neutral, roll 10"]
    assert batch.head_turn[:, 0].tolist() == [0, -20, 20, 0, 0, 0] and not batch.blendshapes.any()
