"""The live editor's photo route (nodes/editor_photo.py, web_routes.photo): a Load Image name is resolved inside
ComfyUI's folders only, a photo's size is refused from its header before decoding, malformed requests get 400,
and the face read is the landmarker's (with GENAFFECT_TEST_MODELS). The editor's data names every slider once, in
groups, and the preview carries what a photo is warped to.

ComfyUI's folder_paths is replaced by a stand-in with the functions the pack calls, over a temporary folder."""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import pytest
from genaffect.models.expression import expression_edit
from genaffect.nodes import web_routes
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.environ.get("GENAFFECT_TEST_MODELS", "")
TASK = os.path.join(MODELS, "mediapipe", "face_landmarker.task")


@pytest.fixture
def comfy_folders(tmp_path, monkeypatch):
    roots = {kind: tmp_path / kind for kind in ("input", "output", "temp")}
    for root in roots.values():
        root.mkdir()
    (tmp_path / "secret.png").write_bytes(b"outside every folder")

    def get_annotated_filepath(name, default_dir=None):  # ComfyUI's rule: "name [output]" picks the folder
        if name.startswith("/") or ".." in name:
            raise ValueError(f"Invalid file path: {name!r}")  # as ComfyUI 0.33 does
        for kind in roots:
            if name.endswith(f" [{kind}]"):
                return os.path.join(roots[kind], name[: -len(kind) - 3])
        return os.path.join(default_dir or roots["input"], name)

    models = str(tmp_path / "models")
    stand_in = types.SimpleNamespace(get_annotated_filepath=get_annotated_filepath,
                                     get_directory_by_type=lambda kind: str(roots.get(kind)) if kind in roots else None,
                                     models_dir=models,
                                     get_folder_paths=lambda folder: [os.path.join(models, folder)])
    monkeypatch.setitem(sys.modules, "folder_paths", stand_in)
    return roots


@pytest.mark.parametrize("payload", [None, [], {}, {"image": 3}, {"image": ""}, {"image": "x" * 600},
                                     {"image": "a\0b.png"}])
def test_a_malformed_request_gets_400_saying_what_to_send(payload, comfy_folders):
    answer, status = web_routes.photo(payload)
    assert status == 400 and "Load Image file name" in answer["error"]


def test_names_outside_comfyuis_folders_missing_files_and_non_images_are_refused(comfy_folders):
    assert web_routes.photo({"image": "../secret.png"})[1] == 403
    assert web_routes.photo({"image": "/etc/passwd"})[1] == 403
    answer, status = web_routes.photo({"image": "nobody.png"})
    assert status == 404 and "upload it first" in answer["error"]
    (comfy_folders["input"] / "notes.png").write_text("not a picture")
    answer, status = web_routes.photo({"image": "notes.png"})
    assert status == 422 and answer["error"].startswith("notes.png is not a readable image")
    assert str(comfy_folders["input"]) not in answer["error"]  # the server's folders are not told to the browser


def test_a_huge_photo_is_refused_from_its_header_before_it_is_decoded(comfy_folders, monkeypatch):
    Image.new("1", (8000, 7000)).save(comfy_folders["input"] / "huge.png")  # 56 megapixels, a small file
    decoded = []
    original = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1) or original(self))
    answer, status = web_routes.photo({"image": "huge.png"})
    assert status == 413 and "50 megapixels" in answer["error"] and not decoded
    assert answer["error"].startswith("huge.png is 8000x7000 pixels")


def test_without_the_landmarker_file_the_answer_says_where_to_download_it(comfy_folders):
    from skimage import data

    Image.fromarray(data.astronaut()).save(comfy_folders["input"] / "astronaut.png")
    answer, status = web_routes.photo({"image": "astronaut.png"})
    assert status == 422 and "face_landmarker.task" in answer["error"] and "models/mediapipe" in answer["error"]


@pytest.mark.skipif(not os.path.isfile(TASK), reason="set GENAFFECT_TEST_MODELS to a models folder with "
                                                      "mediapipe/face_landmarker.task")
def test_the_photos_face_is_what_the_real_landmarker_reads(comfy_folders, tmp_path):
    from skimage import data

    (tmp_path / "models" / "mediapipe").mkdir(parents=True)
    os.symlink(TASK, tmp_path / "models" / "mediapipe" / "face_landmarker.task")
    (comfy_folders["output"] / "sub").mkdir()
    Image.fromarray(data.astronaut()).save(comfy_folders["output"] / "sub" / "astronaut.png")
    answer, status = web_routes.photo({"image": "sub/astronaut.png [output]"})
    assert status == 200, answer
    assert answer["view"] == {"filename": "astronaut.png", "subfolder": "sub", "type": "output"}
    with open(os.path.join(REPO, "tests", "data", "astronaut_face.json"), encoding="utf-8") as handle:
        stored = json.load(handle)
    assert (answer["width"], answer["height"], answer["faces"]) == (512, 512, 1)
    assert np.abs(np.array(answer["landmarks"]) - stored["landmarks"]).max() < 1e-6
    assert np.abs(np.array(answer["reading"]) - stored["blendshapes"]).max() < 1e-6
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(comfy_folders["input"] / "dark.png")
    answer, status = web_routes.photo({"image": "dark.png"})
    assert status == 422 and "no face" in answer["error"]


def test_the_editors_groups_hold_every_slider_once_in_the_widgets_order_with_artist_names():
    groups = web_routes.editor_data()["slider_groups"]
    assert [g["region"] for g in groups] == list(expression_edit.REGIONS)
    names = [s["name"] for g in groups for s in g["sliders"]]
    assert names == list(expression_edit.SLIDER_NAMES) + list(expression_edit.HEAD_SLIDER_NAMES)
    for slider in (s for g in groups for s in g["sliders"]):
        assert slider["label"] and slider["label"] != slider["name"] and slider["tooltip"]
    smile = next(s for g in groups for s in g["sliders"] if s["name"] == "smile_left")
    assert smile["blendshapes"] == ["mouthSmileLeft"] and smile["moves_photos"]
    sneer = next(s for g in groups for s in g["sliders"] if s["name"] == "sneer_left")
    assert not sneer["moves_photos"]  # MediaPipe never reads noseSneer: a photo does not move with it


def test_the_preview_gives_the_targets_and_head_turn_a_photo_is_warped_to_and_the_presets_name():
    from genaffect.nodes.expression_nodes import GenAffectExpressionEditor

    data = web_routes.editor_data()
    happy = next(p for p in data["presets"] if p["name"] == "happy")
    answer = web_routes.preview({"node": "GenAffectExpressionEditor",
                                 "inputs": {"intensity": 1.0, **happy["sliders"], "head_yaw": 8.0}})
    node = GenAffectExpressionEditor().edit(1.0, head_yaw=8.0, **happy["sliders"])[0]
    assert answer["labels"] == ["happy"] == node.labels  # the preset's name until a slider moves
    assert np.allclose(answer["estimator_blendshapes"], node.estimator_blendshapes)
    assert answer["head_turn"] == [[8.0, 0.0, 0.0]]
    moved = web_routes.preview({"node": "GenAffectExpressionEditor",
                                "inputs": {"intensity": 1.0, **happy["sliders"], "jaw_open": 0.5}})
    assert moved["labels"] == ["edited"]
    presets = web_routes.preview({"node": "GenAffectExpressionPreset", "inputs": {"expressions": "sad, angry"}})
    assert presets["head_turn"] == [[0.0, 0.0, 0.0]] * 2 and len(presets["estimator_blendshapes"]) == 2
