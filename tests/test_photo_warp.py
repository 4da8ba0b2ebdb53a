"""The face-motion model and the photo warp: the shipped model file is valid and damaged ones are refused, the warp
leaves every pixel outside its mask as the photo had it, moves the face where the expression asks, and the
browser's module (js/face_warp.js, run by Node.js) computes the same landmarks and the same pixels as Python.

The photo is skimage's astronaut (public domain); its landmarks, blendshapes and head pose as MediaPipe's real
face landmarker reads them are stored in tests/data/astronaut_face.json (the landmarker is a user download)."""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError
from genaffect.models.expression import face_motion, photo_warp
from genaffect.models.expression.batch import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES
from genaffect.models.expression.expression_library import estimator_target, readable_blendshapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASTRONAUT = os.path.join(REPO, "tests", "data", "astronaut_face.json")
BASIC = ("neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted")
MOUTH = [61, 291, 13, 14, 0, 17]  # corners, inner lips, outer lips


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    with open(ASTRONAUT, encoding="utf-8") as handle:
        read = json.load(handle)
    rgb = data.astronaut()
    assert list(rgb.shape[:2]) == read["size"]
    landmarks = np.array(read["landmarks"]).reshape(-1, 3)
    face = face_motion.pose_face(face_motion.face_motion().mesh, landmarks, read["blendshapes"], read["head_pose"],
                                 rgb.shape[1], rgb.shape[0])
    return rgb, face, read


def _edits(reading) -> list[tuple[str, list[float], float, list[float]]]:
    """(name, target, intensity, turn): the 7 basic presets, gaze, jaw with a turn, a smile with pitch and roll."""
    edits = [(name, estimator_target(name).astype(float).tolist(), 1.0, [0.0, 0.0, 0.0]) for name in BASIC]
    gaze = np.array(reading, dtype=float)
    gaze[[BLENDSHAPE_INDEX["eyeLookInRight"], BLENDSHAPE_INDEX["eyeLookOutLeft"]]] = 0.9
    edits.append(("gaze to the image's right", gaze.tolist(), 1.0, [0.0, 0.0, 0.0]))
    jaw = np.array(reading, dtype=float)
    jaw[BLENDSHAPE_INDEX["jawOpen"]] = 0.7
    edits.append(("jaw open, yaw +10", jaw.tolist(), 1.0, [10.0, 0.0, 0.0]))
    edits.append(("surprised at 1.4, pitch -8, roll 5", estimator_target("surprised").astype(float).tolist(), 1.4,
                  [0.0, -8.0, 5.0]))
    funnel = np.array(reading, dtype=float)
    funnel[BLENDSHAPE_INDEX["mouthFunnel"]] = 1.0  # beyond the model's reach: both sides stop at the same place
    edits.append(("funnel 1", funnel.tolist(), 1.0, [0.0, 0.0, 0.0]))
    return edits


def test_the_shipped_model_is_valid_fitted_on_the_readable_blendshapes_and_says_where_it_comes_from():
    data = face_motion.face_motion_data()
    motion = face_motion.parse_face_motion(data)
    assert set(motion.names) == set(readable_blendshapes())  # what the estimator can read, nothing else
    assert motion.moves.shape == (len(motion.names), 478 * 3) and np.all(np.isfinite(motion.moves))
    moving = np.linalg.norm(motion.moves.reshape(len(motion.names), -1, 3), axis=2).max(axis=1)  # cm per unit
    assert moving.min() > 0.3, dict(zip(motion.names, moving.round(3)))  # every modelled blendshape moves
    assert (moving * motion.reach).max() < 3.0  # and, as far as a target goes, by a face's worth, not wildly
    topology = motion.topology
    assert sum(len(t) for t in topology.triangles.values()) > 1000 and topology.vertex_count == 478 + 2 * len(topology.oval)
    provenance = data["provenance"]
    assert provenance["photos"]["license"] == "Apache-2.0" and provenance["mesh"]["license"].startswith("Apache-2.0")
    assert provenance["photos"]["people_fit"] > 1000 and provenance["landmarker"]["sha256"]
    assert os.path.isfile(os.path.join(REPO, provenance["script"]))
    fit = data["fit"]
    held_out = fit["held_out_expression_terms_only"]
    assert held_out["mean_err_cm"] < held_out["baseline_err_cm"]  # it predicts held-out people better than no change
    assert set(fit["readback_gain"]) == set(motion.names)


def _damaged(change):
    data = copy.deepcopy(face_motion.face_motion_data())
    change(data)
    return data


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="something.else"), "not a genaffect.face_motion file"),
    (lambda d: d.update(version=2), "newer GenAffect"),
    (lambda d: d.update(landmarks=468), "478"),
    (lambda d: d["blendshapes"].reverse(), "MediaPipe's order"),
    (lambda d: d["blendshapes"].__setitem__(0, "tongueOut"), "movement names"),
    (lambda d: d["moves"].update(shape=[10**9, 478, 3]), "moves.shape"),
    (lambda d: d["moves"].update(data=d["moves"]["data"][:-8]), "base64 of"),
    (lambda d: d["moves"].update(data="!" * len(d["moves"]["data"])), "not base64"),
    (lambda d: d["moves"]["scale"].__setitem__(0, float("nan")), "NaN"),
    (lambda d: d["warp"]["triangles"]["skin"].__setitem__(0, 10**6), "outside"),
    (lambda d: d["warp"]["triangles"]["mouth"].pop(), "multiple of 3"),
    (lambda d: d["warp"]["mouth_uv"].pop(next(iter(d["warp"]["mouth_uv"]))), "mouth_uv"),
    (lambda d: d["mesh"].update(vertices=d["mesh"]["vertices"][:-3]), "mesh.vertices"),
    (lambda d: d["reach"].__setitem__(0, 1.5), "reach"),
])
def test_a_damaged_model_file_is_refused_saying_what_is_wrong(change, message):
    with pytest.raises(GenAffectInputError, match=message) as caught:
        face_motion.parse_face_motion(_damaged(change))
    assert "tools/fit_face_motion.py" in str(caught.value)


def test_the_shipped_quantised_moves_decode_to_what_the_scales_say():
    data = face_motion.face_motion_data()
    raw = np.frombuffer(base64.b64decode(data["moves"]["data"]), "<i2").reshape(len(data["blendshapes"]), -1)
    assert np.abs(raw).max(axis=1).min() == 32767  # each row uses its whole int16 range (scale = max / 32767)


def test_outside_the_mask_every_pixel_is_the_photos_and_inside_only_the_face_changes(astronaut):
    rgb, face, _ = astronaut
    motion = face_motion.face_motion()
    pixels = face.landmarks[:, :2] * [rgb.shape[1], rgb.shape[0]]
    box = (pixels.min(0) - 0.8 * np.ptp(pixels, 0), pixels.max(0) + 0.8 * np.ptp(pixels, 0))
    for name, target, intensity, turn in _edits(face.reading):
        result = photo_warp.warp_photo(motion, rgb, face, target, intensity, turn)
        assert result.image.dtype == np.uint8 and result.image.shape == rgb.shape
        assert np.array_equal(result.image[~result.mask], rgb[~result.mask]), name
        rows, cols = np.nonzero(result.mask)
        assert rows.size > 1000, name
        assert box[0][0] <= cols.min() and cols.max() <= box[1][0] and box[0][1] <= rows.min(), name  # around the face
    unchanged = photo_warp.warp_photo(motion, rgb, face, face.reading)  # its own expression: nothing moves
    assert not unchanged.mask.any() and np.array_equal(unchanged.image, rgb)
    assert np.allclose(unchanged.landmarks, face.landmarks, atol=1e-9)


def test_the_landmarks_move_the_way_the_expression_asks(astronaut):
    rgb, face, _ = astronaut
    motion = face_motion.face_motion()
    height = rgb.shape[0]

    def lip_gap(landmarks):
        return (landmarks[14, 1] - landmarks[13, 1]) * height

    surprised = face_motion.target_landmarks(motion, face, estimator_target("surprised"))
    neutral = face_motion.target_landmarks(motion, face, estimator_target("neutral"))
    assert lip_gap(surprised) > 1.3 * lip_gap(face.landmarks)  # the jaw drops
    brow = [105, 334]  # mid brows rise
    assert np.all(surprised[brow, 1] * height < face.landmarks[brow, 1] * height - 1)
    corners = [61, 291]  # the smiling astronaut's mouth corners come down to neutral
    assert np.all(neutral[corners, 1] > face.landmarks[corners, 1])
    turned = face_motion.target_landmarks(motion, face, face.reading, turn=(12.0, 0.0, 0.0))
    nose = 1
    assert abs(turned[nose, 0] - face.landmarks[nose, 0]) * rgb.shape[1] > 5  # a yaw turn moves the nose sideways
    with pytest.raises(GenAffectInputError, match="at most 30"):
        face_motion.target_landmarks(motion, face, face.reading, turn=(45.0, 0.0, 0.0))


def test_a_target_beyond_what_real_faces_showed_goes_as_far_as_they_did_and_says_so(astronaut):
    rgb, face, _ = astronaut
    motion = face_motion.face_motion()
    funnel = motion.names.index("mouthFunnel")
    assert 0 < motion.reach[funnel] < 0.5  # MediaPipe rarely reads a funnel; the photos showed little of it
    asked = np.array(face.reading)
    asked[BLENDSHAPE_INDEX["mouthFunnel"]] = 1.0
    at_reach = asked.copy()
    at_reach[BLENDSHAPE_INDEX["mouthFunnel"]] = motion.reach[funnel]
    np.testing.assert_array_equal(face_motion.target_landmarks(motion, face, asked),
                                  face_motion.target_landmarks(motion, face, at_reach))
    assert motion.beyond_reach(asked) == {"mouthFunnel": (1.0, float(motion.reach[funnel]))}
    moved = np.linalg.norm((face_motion.target_landmarks(motion, face, asked) - face.landmarks)[:, :2] * 512, axis=1)
    assert 1 < moved.max() < 25  # a visible change, not a face torn apart


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (apt-get install nodejs)")
def test_the_browser_module_moves_the_landmarks_and_paints_the_pixels_as_python_does(astronaut, tmp_path):
    rgb, face, read = astronaut
    motion = face_motion.face_motion()
    edits = _edits(face.reading)
    height, width = rgb.shape[:2]
    rgba = np.concatenate([rgb, np.full((height, width, 1), 255, np.uint8)], axis=2)
    (tmp_path / "photo.rgba").write_bytes(rgba.tobytes())
    case = {"width": width, "height": height, "landmarks": read["landmarks"], "reading": read["blendshapes"],
            "head_pose": read["head_pose"], "names": list(BLENDSHAPE_NAMES), "edits": edits}
    (tmp_path / "case.json").write_text(json.dumps(case))
    script = f"""
import {{ readFileSync, writeFileSync }} from "node:fs";
import {{ decodeModel, poseFace, prepare, redraw }} from {json.dumps('file://' + os.path.join(REPO, 'js', 'face_warp.js'))};
const model = decodeModel(JSON.parse(readFileSync({json.dumps(face_motion.MODEL_PATH)}, "utf8")));
const dir = {json.dumps(str(tmp_path))}, c = JSON.parse(readFileSync(dir + "/case.json", "utf8"));
const face = poseFace(model, c.landmarks, c.reading, c.head_pose, c.width, c.height);
const prepared = prepare(model, new Uint8ClampedArray(readFileSync(dir + "/photo.rgba")), c.width, c.height, face, c.names);
const landmarks = c.edits.map(([name, target, intensity, turn], k) => {{
  const done = redraw(model, prepared, target, intensity, turn);
  writeFileSync(dir + "/js_" + k + ".rgba", prepared.out);
  return Array.from(done.landmarks);
}});
console.log(JSON.stringify(landmarks));
"""
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    js_landmarks = json.loads(result.stdout)
    differences = []
    for k, (name, target, intensity, turn) in enumerate(edits):
        python = photo_warp.warp_photo(motion, rgb, face, target, intensity, turn)
        np.testing.assert_allclose(np.array(js_landmarks[k]).reshape(-1, 3), python.landmarks, rtol=0, atol=1e-9,
                                   err_msg=name)
        painted = np.frombuffer((tmp_path / f"js_{k}.rgba").read_bytes(), np.uint8).reshape(height, width, 4)
        assert np.all(painted[..., 3] == 255)
        difference = np.abs(painted[..., :3].astype(int) - python.image)
        differences.append(float(difference.mean()))
        assert difference.mean() <= 0.01 and difference.max() <= 2, (name, difference.mean(), difference.max())
    print(f"JS vs Python, mean |difference| per channel over {len(edits)} edits: {max(differences):.2e} at most")
