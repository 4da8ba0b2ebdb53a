"""The face model: its data is valid, Python's geometry is stable and symmetric, the browser's module computes
the same geometry from the same data, and the editor's server side answers with the nodes' own outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from genaffect.models.drawing.face_drawing import (
    MODEL_PATH,
    draw_expressions,
    draw_face,
    face_model,
    long_enough,
    parse_face_model,
)
from genaffect.models.expression import expression_edit
from genaffect.models.expression.batch import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES, NUM_BLENDSHAPES
from genaffect.models.expression.expression_library import preset_names, presets
from genaffect.models.face_drawing import main
from genaffect.nodes.expression_nodes import GenAffectExpressionEditor, GenAffectExpressionPreset
from genaffect.nodes.web_routes import answer_preview, editor_data, preview
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "tests", "data", "face_model_golden.json")


def _vector(**weights) -> np.ndarray:
    vector = np.zeros(NUM_BLENDSHAPES)
    for name, weight in weights.items():
        vector[BLENDSHAPE_INDEX[name]] = weight
    return vector


def _mirrored(name: str) -> str:
    return name.replace("Left", "\0").replace("Right", "Left").replace("\0", "Right")


def _mirror_point(name: str) -> str:
    return name[:-2] + {"_L": "_R", "_R": "_L"}[name[-2:]] if name[-2:] in ("_L", "_R") else name


def test_face_model_data_is_valid_and_every_blendshape_but_neutral_moves_something():
    with open(MODEL_PATH, encoding="utf-8") as handle:
        data = json.load(handle)
    model = parse_face_model(data)
    assert model.moves.shape == (NUM_BLENDSHAPES, len(model.point_names), 2)
    moving = np.abs(model.moves).sum(axis=(1, 2)) > 0
    assert not moving[0] and moving[1:].all(), [n for n, m in zip(BLENDSHAPE_NAMES, moving) if not m]
    broken = dict(data, moves={**data["moves"], "jawOpen": {"no_such_point": [0, 1]}})
    with pytest.raises(ValueError, match="no_such_point"):
        parse_face_model(broken)


def test_geometry_matches_the_golden_file():
    with open(GOLDEN, encoding="utf-8") as handle:
        golden = json.load(handle)["cases"]
    model = face_model()
    for case in golden.values():
        geometry = model.geometry(_vector(**case["blendshapes"]))
        expected = np.array([case["points"][name] for name in model.point_names])
        np.testing.assert_allclose(geometry, expected, atol=1e-6)


def test_the_face_is_left_right_symmetric_and_a_left_blendshape_moves_the_subjects_left_side():
    model = face_model()
    index = {name: i for i, name in enumerate(model.point_names)}
    neutral = model.geometry(np.zeros(NUM_BLENDSHAPES))
    for name in model.point_names:
        np.testing.assert_allclose(neutral[index[_mirror_point(name)]], neutral[index[name]] * [-1, 1], atol=1e-9)
    for blendshape in BLENDSHAPE_NAMES:
        moved = model.geometry(_vector(**{blendshape: 1.0}))
        twin = model.geometry(_vector(**{_mirrored(blendshape): 1.0}))
        mirrored_twin = np.array([twin[index[_mirror_point(name)]] * [-1, 1] for name in model.point_names])
        np.testing.assert_allclose(moved, mirrored_twin, atol=1e-9, err_msg=blendshape)
    # the subject's left is the image's right (x > 0): a left smile lifts the corner at x > 0
    smile = model.geometry(_vector(mouthSmileLeft=1.0))
    corner = index["mouth_corner_L"]
    assert neutral[corner][0] > 0 and smile[corner][1] < neutral[corner][1]
    assert smile[index["mouth_corner_R"]].tolist() == neutral[index["mouth_corner_R"]].tolist()
    blink = model.geometry(_vector(eyeBlinkLeft=1.0))
    assert abs(blink[index["eye_upper_inner_L"]][1] - blink[index["eye_lower_inner_L"]][1]) < 0.01  # closed


def test_drawing_changes_with_the_expression_and_a_sheet_labels_every_face():
    neutral, smile = draw_face(np.zeros(NUM_BLENDSHAPES), 96), draw_face(_vector(mouthSmileLeft=1, jawOpen=0.6), 96)
    assert neutral.shape == (96, 96, 3) and neutral.dtype == np.uint8
    assert np.abs(neutral.astype(int) - smile).mean() > 0.5
    batch = presets(["happy", "sad", "wink left"], 1.0)
    sheet = draw_expressions(batch, 64, columns=3, prompts=["a", "b", "c"])
    assert sheet.shape[1] > 3 * 64 and sheet.shape[0] > 64


def test_the_no_download_command_draws_the_whole_library(tmp_path, capsys):
    out = tmp_path / "library.png"
    assert main(["--out", str(out), "--size", "48"]) == 0
    assert out.stat().st_size > 10_000 and f"{len(preset_names())} expressions" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (apt-get install nodejs)")
def test_the_browser_module_computes_the_same_geometry_as_python():
    vectors = [np.zeros(NUM_BLENDSHAPES).tolist(), _vector(mouthSmileLeft=0.8, eyeBlinkRight=0.5).tolist(),
               np.random.default_rng(0).uniform(0, 1, NUM_BLENDSHAPES).tolist()]
    script = (
        f"import {{ faceGeometry }} from {json.dumps('file://' + os.path.join(REPO, 'js', 'face_model.js'))};\n"
        f"import {{ readFileSync }} from 'node:fs';\n"
        f"const model = JSON.parse(readFileSync({json.dumps(MODEL_PATH)}, 'utf8'));\n"
        f"const names = {json.dumps(list(BLENDSHAPE_NAMES))};\n"
        f"console.log(JSON.stringify({json.dumps(vectors)}.map((v) => faceGeometry(model, names, v))));\n"
    )
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    model = face_model()
    for vector, geometry in zip(vectors, json.loads(result.stdout)):
        expected = model.geometry(vector)
        np.testing.assert_allclose([geometry[name] for name in model.point_names], expected, atol=1e-12)


def test_the_editor_preview_is_what_the_nodes_output():
    sliders = {"smile_left": 0.7, "jaw_open": 0.4, "gaze_horizontal": -0.5}
    answer = preview({"node": "GenAffectExpressionEditor", "inputs": {"intensity": 0.8, **sliders, "face": None}})
    expected = GenAffectExpressionEditor().edit(0.8, **sliders)[0]
    assert answer["labels"] == expected.labels and np.allclose(answer["blendshapes"], expected.blendshapes)
    answer = preview({"node": "GenAffectExpressionPreset", "inputs": {"expressions": "happy, sad", "intensity": 1}})
    assert answer["count"] == 2 and np.allclose(answer["blendshapes"],
                                                GenAffectExpressionPreset().build("happy, sad", 1.0)[0].blendshapes)
    refused, status = answer_preview(json.dumps({"node": "GenAffectExpressionPreset",
                                                 "inputs": {"expressions": "hapy", "intensity": 1}}).encode())
    assert status == 400 and "hapy" in refused["error"]
    refused, status = answer_preview(b'{"node": "SomethingElse", "inputs": {}}')
    assert status == 400 and "SomethingElse" in refused["error"]


def test_the_gallery_sets_an_editors_sliders_to_reproduce_a_preset_made_of_slider_shapes():
    data = editor_data()
    assert data["blendshape_names"] == list(BLENDSHAPE_NAMES) and len(data["presets"]) == len(preset_names())
    assert set(data["model"]["moves"]) == set(BLENDSHAPE_NAMES)
    vector = _vector(mouthSmileLeft=0.6, mouthSmileRight=0.6, eyeBlinkLeft=1.0, jawOpen=0.3, browInnerUp=0.5,
                     eyeLookInLeft=0.4, eyeLookOutRight=0.4)
    sliders = expression_edit.sliders_from_blendshapes(vector)
    rebuilt = GenAffectExpressionEditor().edit(1.0, **sliders)[0].blendshapes[0]
    np.testing.assert_allclose(rebuilt, vector, atol=1e-3)


@pytest.mark.parametrize("arguments, message", [
    (["--workflow", "{tmp}/missing.json"], "missing.json: No such file or directory"),
    (["--workflow", "{tmp}/broken.json"], "broken.json is not a JSON workflow"),
    (["--workflow", "{tmp}/list.json"], "list.json: this is not a ComfyUI workflow as the frontend saves it"),
    (["--workflow", "{tmp}/badnode.json"], "badnode.json: a node of this workflow is malformed"),
    (["--workflow", "{tmp}/unknown.json"], "'grinning badger' is not in the expression library"),
    (["--workflow", "{tmp}"], "Is a directory"),
    (["--expressions", "grinning badger"], "'grinning badger' is not in the expression library"),
    (["--size", "0"], "--size is 0; it must be a whole number from 16 to 1024"),
    (["--size", "100000"], "--size is 100000"),
    (["--out", "{tmp}/no/such/folder/x.png"], "the folder .*no/such/folder does not exist"),
    (["--out", "{tmp}/x.xyz"], ".xyz is not a picture format Pillow writes"),
    (["--out", "{tmp}"], "is a folder; give a file name"),
    (["--out", "{tmp}/exists.png"], "exists.png already exists; choose another name, or pass --overwrite"),
])
def test_the_drawing_command_explains_ordinary_mistakes_without_a_traceback(arguments, message, tmp_path, capsys):
    from genaffect.models.errors import run_command

    (tmp_path / "broken.json").write_text("{nope")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "badnode.json").write_text(json.dumps({"nodes": [{"type": "Note", "widgets_values": 5}]}))
    (tmp_path / "unknown.json").write_text(json.dumps({"nodes": [
        {"type": "GenAffectExpressionPreset", "widgets_values": ["grinning badger", 1.0]}]}))
    (tmp_path / "exists.png").write_bytes(b"my own picture")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "new.png")]
    assert run_command(main, argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert (tmp_path / "exists.png").read_bytes() == b"my own picture"


def test_the_drawing_command_replaces_a_picture_when_told(tmp_path):
    out = tmp_path / "sheet.png"
    out.write_bytes(b"old")
    assert main(["--expressions", "happy", "--out", str(out), "--size", "32", "--overwrite"]) == 0
    assert Image.open(out).size[0] > 32


def test_at_intensity_1_each_basic_expression_shows_its_own_cues():
    """What tells the seven basic expressions (and worried) apart in a drawing a few dozen pixels wide: the brows'
    slant and height, wrinkles, the eyes' opening, the mouth corners."""
    model = face_model()
    index = {name: i for i, name in enumerate(model.point_names)}
    shapes = {shape["name"]: shape for shape in model.shapes}
    names = ["neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted", "worried"]
    faces = dict(zip(names, (model.geometry(row) for row in presets(names, 1.0).blendshapes)))

    def y(face, point):
        return float(np.mean([faces[face][index[point + side], 1] for side in ("_L", "_R")]))

    def slant(face):  # > 0: the inner brow stands higher than the outer one (y grows downwards)
        return y(face, "brow_outer") - y(face, "brow_inner")

    def corners(face):  # > 0: the mouth corners above the middle of the lips
        return (faces[face][index["upper_inner_mid"], 1] + faces[face][index["lower_inner_mid"], 1]) / 2 \
            - y(face, "mouth_corner")

    def eye_opening(face):
        return y(face, "eye_lower_outer") - y(face, "eye_upper_outer")

    def drawn(face, shape):
        return long_enough(shapes[shape], faces[face][[index[p] for p in shapes[shape]["points"]]])

    neutral_slant, neutral_brow = slant("neutral"), y("neutral", "brow_mid")
    for sad_like in ("sad", "worried", "fearful"):
        assert slant(sad_like) > neutral_slant + 0.08, sad_like  # inner corners raised
        assert drawn(sad_like, "forehead line 1"), sad_like
    assert slant("angry") < neutral_slant - 0.05 and drawn("angry", "brow frown line L")  # a V, knitted
    assert corners("happy") > 0.12 and corners("sad") < -0.06 and corners("worried") < 0  # smile, frown
    assert eye_opening("fearful") > eye_opening("neutral") + 0.03 and eye_opening("angry") < eye_opening("neutral")
    assert y("surprised", "brow_mid") < neutral_brow - 0.1 and faces["surprised"][index["lower_inner_mid"], 1] \
        - faces["surprised"][index["upper_inner_mid"], 1] > 0.06  # brows up, mouth open
    assert drawn("disgusted", "nose wrinkle L") and not drawn("sad", "nose wrinkle L")
    assert y("disgusted", "upper_outer") < y("neutral", "upper_outer") - 0.05  # the upper lip raised
    assert not any(drawn("neutral", name) for name, shape in shapes.items() if "min_length" in shape)
    assert corners("fearful") > corners("sad") and slant("worried") > slant("sad")  # the look-alikes differ
