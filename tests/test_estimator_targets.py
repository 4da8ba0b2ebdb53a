"""Estimator-space targets: the calibrated data file, presets carrying their target beside the recipe, the
expression error over the readable blendshapes, and the calibration script end to end on painted faces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from genaffect.models.evaluation import face_metrics
from genaffect.models.expression import expression_edit, expression_library
from genaffect.models.expression.batch import (
    BLENDSHAPE_INDEX,
    BLENDSHAPE_NAMES,
    MOVEMENT_NAMES,
    ExpressionBatch,
    concatenate,
)
from genaffect.models.expression.expression_library import (
    blendshapes_from_aus,
    check_estimator_targets,
    derive_estimator_target,
    estimator_space,
    estimator_target,
    library,
    presets,
    readable_blendshapes,
)
from genaffect.models.errors import PackDataError
from genaffect.models.files.packaged_data import data_path

BASIC = ["neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted"]
DATA = data_path(expression_library.ESTIMATOR_TARGETS)


def _data() -> dict:
    with open(DATA, encoding="utf-8") as handle:
        return json.load(handle)


def test_every_preset_has_a_target_of_52_values_in_0_1():
    space = estimator_space()
    assert set(space.targets) == set(library())
    for name, target in space.targets.items():
        assert target.shape == (52,) and target.min() >= 0.0 and target.max() <= 1.0, name


def test_the_readable_list_is_a_nonempty_subset_of_the_movements():
    readable = readable_blendshapes()
    assert readable and len(set(readable)) == len(readable) and set(readable) <= set(MOVEMENT_NAMES)
    assert "_neutral" not in readable


def test_the_basic_presets_are_photo_calibrated_and_the_file_says_on_what():
    data, space = _data(), estimator_space()
    for name in BASIC:
        entry = data["targets"][name]
        assert space.photo_calibrated[name] and entry["photos"] >= 5 and entry["people"] >= 5, name
    assert not space.photo_calibrated["wink left"]  # no photos of it: derived, and marked so
    assert len(data["estimator"]["sha256"]) == 64 and data["estimator"]["file"] == "face_landmarker.task"
    sources = data["photos"]["provenance"]["sources"]
    assert sources and all(s["repository"] and s["commit"] and s["license"] for s in sources)
    assert data["photos"]["committed"] is False  # the numbers only: photos stay out of the repository
    assert set(data["evaluation"]["per_preset"]) == set(BASIC)


def test_presets_without_photos_follow_the_stated_rule_from_todays_recipes():
    """A changed recipe or a new preset without re-deriving would leave a stale target; this says so."""
    space = estimator_space()
    for name, entry in library().items():
        if space.photo_calibrated[name]:
            continue
        derived = derive_estimator_target(blendshapes_from_aus(entry.aus, name), space.neutral, space.gains,
                                          space.readable_indices)
        np.testing.assert_allclose(space.targets[name], derived, atol=1e-4,
                                   err_msg=f"{name}: run tools/calibrate_expressions.py --rederive")


def test_unreadable_blendshapes_keep_the_neutral_reading_in_derived_targets():
    space = estimator_space()
    unreadable = [BLENDSHAPE_INDEX[n] for n in MOVEMENT_NAMES if n not in space.readable]
    for name, calibrated in space.photo_calibrated.items():
        if not calibrated:
            np.testing.assert_array_equal(space.targets[name][unreadable], space.neutral[unreadable])


def test_a_broken_file_is_refused_with_the_fix():
    data = _data()
    names = list(library())
    check_estimator_targets(data, names)
    missing = dict(data, targets={k: v for k, v in data["targets"].items() if k != "pout"})
    with pytest.raises(PackDataError, match="targets missing for \\['pout'\\].*calibrate_expressions.py"):
        check_estimator_targets(missing, names)
    outside = json.loads(json.dumps(data))
    outside["targets"]["happy"]["blendshapes"][5] = 1.5
    with pytest.raises(PackDataError, match="'happy' must be 52 values in 0..1"):
        check_estimator_targets(outside, names)
    unknown = json.loads(json.dumps(data))
    unknown["readable"]["names"] = ["smile"]
    with pytest.raises(PackDataError, match="readable.names"):
        check_estimator_targets(unknown, names)


def test_presets_carry_the_recipe_and_the_estimator_target_at_the_same_intensity():
    full = presets(["happy", "sad"])
    np.testing.assert_array_equal(full.blendshapes[0], blendshapes_from_aus(library()["happy"].aus))
    np.testing.assert_array_equal(full.estimator_blendshapes[0], estimator_target("happy"))
    assert np.array_equal(full.estimator_space("test"), full.estimator_blendshapes)
    # intensity runs from the neutral face as the estimator reads it (not all zeros) to the target
    none = presets(["happy"], 0.0)
    assert not none.blendshapes.any()
    np.testing.assert_allclose(none.estimator_blendshapes[0], estimator_target("neutral"), atol=1e-6)
    half = presets(["happy"], 0.5).estimator_blendshapes[0]
    np.testing.assert_allclose(half, (estimator_target("neutral") + estimator_target("happy")) / 2, atol=1e-6)


def test_an_estimated_expression_is_already_in_the_estimators_space():
    reading = np.full((1, 52), 0.3, np.float32)
    estimated = ExpressionBatch(["photo"], blendshapes=reading)
    assert estimated.estimator_blendshapes is None and np.array_equal(estimated.estimator_space("test"), reading)
    mixed = concatenate([presets(["happy"]), estimated])  # a sheet of a preset and a measured face
    np.testing.assert_array_equal(mixed.estimator_blendshapes, np.stack([estimator_target("happy"), reading[0]]))
    np.testing.assert_array_equal(mixed.rows([1]).estimator_blendshapes, reading)


def test_edits_transitions_and_mixes_carry_the_estimator_target_along():
    happy, sad = presets(["happy"]), presets(["sad"])
    # a slider moves the estimator target by its movement as the estimator reads it: not at all when unreadable
    sneer = expression_edit.apply_edits(happy, {"sneer_left": 0.5})
    assert sneer.blendshapes[0, BLENDSHAPE_INDEX["noseSneerLeft"]] == pytest.approx(0.5)
    np.testing.assert_allclose(sneer.estimator_blendshapes, happy.estimator_blendshapes, atol=1e-6)
    smile = expression_edit.apply_edits(sad, {"smile_left": 0.5})
    gain = estimator_space().gains[BLENDSHAPE_INDEX["mouthSmileLeft"]]
    moved = smile.estimator_blendshapes[0] - sad.estimator_blendshapes[0]
    assert moved[BLENDSHAPE_INDEX["mouthSmileLeft"]] == pytest.approx(0.5 * gain, abs=1e-5)
    steps = expression_edit.interpolate(happy, sad, 3)
    np.testing.assert_allclose(steps.estimator_blendshapes[1],
                               (happy.estimator_blendshapes[0] + sad.estimator_blendshapes[0]) / 2, atol=1e-6)
    photo = ExpressionBatch(["photo"], blendshapes=np.full((1, 52), 0.2, np.float32))
    towards_photo = expression_edit.interpolate(happy, photo, 2)  # the photo's own reading is its target
    np.testing.assert_allclose(towards_photo.estimator_blendshapes[1], photo.blendshapes[0])
    both = presets(["happy", "sad"])
    mixed = expression_edit.mix(both, [1, 3])
    np.testing.assert_allclose(mixed.estimator_blendshapes[0], 0.25 * both.estimator_blendshapes[0]
                               + 0.75 * both.estimator_blendshapes[1], atol=1e-6)


def test_the_error_over_readable_blendshapes_has_no_floor(analyzer):
    """A face the estimator reads exactly as the target scores 0, for every basic preset, and is nearest its own."""
    from genaffect.models.expression.expression_estimator import ExpressionEstimator
    from genaffect.models.face.identity import extract_identity
    from mediapipe_results import MarkerLandmarker
    from tiny_insightface import faces_image

    identity = extract_identity(analyzer, [faces_image(dict(cx=128, cy=128))])[0]
    readings = [estimator_target(name) for name in BASIC]
    estimator = ExpressionEstimator(MarkerLandmarker(scores=readings), "face_landmarker.task")
    metrics = face_metrics.measure(analyzer, identity, [faces_image(dict(cx=128, cy=128))] * len(BASIC),
                                   target=presets(BASIC), estimator=estimator)
    assert [m.blendshape_l1 for m in metrics.images] == [0.0] * len(BASIC)
    assert metrics.expression_accuracy == 1.0
    # the same faces against the FACS recipes: blendshapes no face moves (noseSneer in disgusted) are a floor
    recipe = presets(["disgusted"]).blendshapes
    assert recipe[0, BLENDSHAPE_INDEX["noseSneerLeft"]] > 0.5
    assert "noseSneerLeft" not in readable_blendshapes()


def _photos(root, layout):
    """Painted faces as <expression>/<person>/<file>.png; returns the files in the script's (sorted) order."""
    from PIL import Image
    from tiny_insightface import blank_image, faces_image

    files = []
    for expression, person, kind in layout:
        folder = root / expression / person
        folder.mkdir(parents=True, exist_ok=True)
        image = {"face": faces_image(dict(cx=128, cy=128, half=64)), "small": faces_image(dict(cx=128, cy=128, half=24)),
                 "blank": blank_image()}[kind]
        path = folder / f"{kind}.png"
        Image.fromarray(image).save(path)
        files.append((expression, person, kind))
    return sorted(files)


def test_the_calibration_script_runs_end_to_end_on_painted_faces(tmp_path):
    pytest.importorskip("mediapipe.tasks.python.vision", reason="mediapipe is not installed")
    import calibrate_expressions
    from genaffect.models.expression.expression_estimator import ExpressionEstimator
    from mediapipe_results import MarkerLandmarker

    smile, blink = BLENDSHAPE_INDEX["mouthSmileLeft"], BLENDSHAPE_INDEX["eyeBlinkLeft"]
    layout = [(e, p, "face") for e in ("happy", "neutral", "sad") for p in ("ann", "bob", "cy")]
    layout += [("happy", "bob", "small"), ("neutral", "dee", "blank")]
    order = _photos(tmp_path / "photos", layout)
    values = {("happy", "ann"): 0.6, ("happy", "bob"): 0.8, ("happy", "cy"): 0.7}  # each person's smile

    def reading(expression, person):
        vector = np.full(52, 0.02, np.float32)
        vector[smile] = values.get((expression, person), 0.05)
        vector[blink] = 0.3 if expression == "sad" else 0.1
        return vector

    # the stand-in reads them in the script's order; a photo without a face is asked twice (the second time with a
    # border, as a close-up would be)
    scores = [vector for e, p, kind in order for vector in [reading(e, p)] * (2 if kind == "blank" else 1)]
    estimator = ExpressionEstimator(MarkerLandmarker(scores=scores), "face_landmarker.task")
    (tmp_path / "photos" / "provenance.json").write_text(json.dumps({"sources": [{"repository": "painted/faces"}]}))
    output = tmp_path / "estimator_targets.json"
    data = calibrate_expressions.main(["--photos", str(tmp_path / "photos"), "--output", str(output),
                                       "--min-people-per-preset", "3", "--min-people", "1"], estimator=estimator)

    written = json.loads(output.read_text())
    assert written == json.loads(json.dumps(data))
    space = check_estimator_targets(written, list(library()))  # a file the pack accepts
    assert space.photo_calibrated["happy"] and space.photo_calibrated["sad"] and not space.photo_calibrated["angry"]
    assert written["targets"]["happy"]["people"] == 3 and written["targets"]["happy"]["photos"] == 3
    assert space.targets["happy"][smile] == pytest.approx(0.7)  # the median person
    assert space.readable == ("eyeBlinkLeft", "mouthSmileLeft")  # moved 0.1 above the neutral reading
    assert written["photos"]["skipped"] == {"face narrower than 100 px": 1, "no face found": 1}
    assert written["photos"]["provenance"] == {"sources": [{"repository": "painted/faces"}]}
    # gains: happy's recipe drives mouthSmile at 0.9 and the estimator read 0.65 above neutral
    assert space.gains[smile] == pytest.approx((0.7 - 0.05) / 0.9, abs=1e-4)
    per_preset = written["evaluation"]["per_preset"]
    assert set(per_preset) == {"happy", "neutral", "sad"}
    assert per_preset["happy"]["l1_new_person_left_out"] < per_preset["happy"]["l1_old"]
    assert per_preset["sad"]["nearest_rate_new_person_left_out"] == 1.0

    # --rederive refreshes only the presets without photos, from the stored gains (no photos, no estimator)
    stale = json.loads(output.read_text())
    stale["targets"]["angry"]["blendshapes"] = [0.0] * 52
    output.write_text(json.dumps(stale))
    calibrate_expressions.main(["--rederive", "--output", str(output)])
    assert json.loads(output.read_text())["targets"] == written["targets"]
    assert BLENDSHAPE_NAMES == tuple(written["blendshape_names"])


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "latin-1", "a list", "targets a list", "NaN",
                                    "strings", "None", "gains text", "a folder"])
def test_a_damaged_or_missing_targets_file_stops_preset_and_editor_naming_it_and_the_fix(damage, tmp_path, monkeypatch):
    import shutil

    from genaffect.models.errors import PackDataError
    from genaffect.models.files import packaged_data
    from genaffect.nodes.expression_nodes import GenAffectExpressionEditor, GenAffectExpressionPreset

    shutil.copytree(packaged_data.DATA_DIR, tmp_path / "data")
    path = tmp_path / "data" / expression_library.ESTIMATOR_TARGETS
    data = _data()
    first = next(iter(data["targets"]))
    if damage == "missing":
        path.unlink()
    elif damage == "empty":
        path.write_text("")
    elif damage == "truncated":
        path.write_text(path.read_text()[:5000])
    elif damage == "latin-1":
        path.write_bytes(path.read_text().replace("neutral", "neutr\xe9").encode("latin-1"))
    elif damage == "a list":
        path.write_text("[]")
    else:
        if damage == "targets a list":
            data["targets"] = list(data["targets"].values())
        elif damage == "NaN":
            data["targets"][first]["blendshapes"][3] = float("nan")
        elif damage == "strings":
            data["targets"][first]["blendshapes"] = ["a"] * 52
        elif damage == "None":
            data["targets"][first] = None
        elif damage == "gains text":
            data["gains"] = {name: "high" for name in data["gains"]}
        elif damage == "a folder":
            path.unlink()
            path.mkdir()
        if damage != "a folder":
            path.write_text(json.dumps(data))
    monkeypatch.setattr(packaged_data, "DATA_DIR", str(tmp_path / "data"))
    expression_library.estimator_space.cache_clear()
    try:
        for make in (lambda: GenAffectExpressionPreset().build("happy", 1.0),
                     lambda: GenAffectExpressionEditor().edit(1.0)):
            with pytest.raises(PackDataError, match="estimator_targets.json.*Reinstall or update the pack"):
                make()
    finally:
        monkeypatch.undo()
        expression_library.estimator_space.cache_clear()
