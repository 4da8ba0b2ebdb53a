"""Expression type, library, editing, transitions and prompt text."""

from dataclasses import replace

import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError
from genaffect.models.expression import expression_edit, expression_library, expression_text
from genaffect.models.expression.batch import (
    BLENDSHAPE_INDEX,
    BLENDSHAPE_NAMES,
    FLAME_SIZE,
    ExpressionBatch,
    blendshape_vector,
    concatenate,
)
from genaffect.nodes.expression_nodes import (
    GenAffectExpressionEditor,
    GenAffectExpressionPreset,
    GenAffectExpressionToPrompt,
)

DU_2014_COMPOUND = (
    "happily surprised", "happily disgusted", "sadly fearful", "sadly angry", "sadly surprised", "sadly disgusted",
    "fearfully angry", "fearfully surprised", "fearfully disgusted", "angrily surprised", "angrily disgusted",
    "disgustedly surprised", "appalled", "hatred", "awed",
)
BASIC = ("happy", "sad", "fearful", "angry", "surprised", "disgusted", "contempt")
ASYMMETRIC_AND_SUBTLE = (
    "wink left", "wink right", "smirk left", "smirk right", "left brow raised", "right brow raised", "pout",
    "cheek puff", "squint", "sneer left", "sneer right", "grimace", "yawn", "kiss", "faint smile", "suppressed smile",
)


def shapes(vector, *names):
    return [round(float(vector[BLENDSHAPE_INDEX[n]]), 4) for n in names]


# ---- the type ---------------------------------------------------------------------------------


def test_blendshape_order_is_mediapipes_52_categories():
    assert len(BLENDSHAPE_NAMES) == 52 and len(set(BLENDSHAPE_NAMES)) == 52
    assert BLENDSHAPE_NAMES[0] == "_neutral" and BLENDSHAPE_NAMES[1] == "browDownLeft"
    assert BLENDSHAPE_NAMES[25] == "jawOpen" and BLENDSHAPE_NAMES[-1] == "noseSneerRight"
    assert "tongueOut" not in BLENDSHAPE_NAMES


def test_missing_representation_is_none_and_requiring_it_names_the_provider():
    batch = ExpressionBatch(labels=["a"], blendshapes=np.zeros((1, 52)))
    assert batch.flame is None
    with pytest.raises(GenAffectInputError, match="needs flame.*SMIRK"):
        batch.require("flame", "Apply Expression Adapter")


def test_shapes_and_values_are_checked():
    with pytest.raises(GenAffectInputError, match="2 rows of 52"):
        ExpressionBatch(labels=["a", "b"], blendshapes=np.zeros((1, 52)))
    with pytest.raises(GenAffectInputError, match="NaN"):
        ExpressionBatch(labels=["a"], flame=np.full((1, FLAME_SIZE), np.nan))
    with pytest.raises(GenAffectInputError, match="unknown blendshape"):
        blendshape_vector({"mouthSmile": 1.0})


def test_concatenate_keeps_only_shared_representations():
    a = ExpressionBatch(labels=["a"], blendshapes=np.zeros((1, 52)), flame=np.zeros((1, 55)))
    b = ExpressionBatch(labels=["b"], blendshapes=np.ones((1, 52)))
    joined = concatenate([a, b])
    assert joined.labels == ["a", "b"] and joined.blendshapes.shape == (2, 52) and joined.flame is None
    assert joined.rows([1]).labels == ["b"]


# ---- the library ------------------------------------------------------------------------------


def test_library_covers_basic_compound_and_asymmetric_expressions():
    names = set(expression_library.preset_names())
    assert len(names) >= 40
    assert set(BASIC) | set(DU_2014_COMPOUND) | set(ASYMMETRIC_AND_SUBTLE) <= names


def test_every_library_entry_is_valid_and_cites_its_source():
    for name, entry in expression_library.library().items():
        assert entry.source and entry.description
        vector = expression_library.blendshapes_from_aus(entry.aus, name)
        assert vector.min() >= 0.0 and vector.max() <= 1.0
        if name != "neutral":  # neutral is, by definition, no Action Unit at all
            assert entry.aus and vector.max() > 0.0, name


def test_every_action_unit_maps_to_known_blendshapes():
    for number, unit in expression_library.action_units().items():
        assert unit.blendshapes and all(shape in BLENDSHAPE_INDEX for shape, _ in unit.blendshapes), number


def test_du_2014_prototypes_are_encoded():
    aus = lambda name: {code for code, _ in expression_library.library()[name].aus}  # noqa: E731
    assert {"1", "2", "12", "25"} <= aus("happily surprised")
    assert {"4", "10"} <= aus("appalled") and {"1", "2", "5", "25"} <= aus("awed")


def test_one_sided_action_units_move_only_that_side():
    wink = expression_library.blendshapes_from_aus([("L46", 1.0)])
    assert shapes(wink, "eyeBlinkLeft", "eyeBlinkRight") == [1.0, 0.0]
    smirk = expression_library.blendshapes_from_aus([("R12", 0.6)])
    assert shapes(smirk, "mouthSmileLeft", "mouthSmileRight") == [0.0, 0.6]
    jaw = expression_library.blendshapes_from_aus([("L27", 1.0)])  # midline jawOpen at half strength
    assert shapes(jaw, "jawOpen", "mouthStretchLeft", "mouthStretchRight") == [0.5, 0.3, 0.0]


def test_action_units_sharing_a_blendshape_combine_by_maximum():
    vector = expression_library.blendshapes_from_aus([("6", 1.0), ("7", 0.3)])
    assert shapes(vector, "eyeSquintLeft") == [0.4]  # AU6 drives it at 0.4, AU7 at 0.3


def test_bad_recipes_are_explained():
    with pytest.raises(GenAffectInputError, match="write L46 or R46"):
        expression_library.blendshapes_from_aus([("46", 1.0)])
    with pytest.raises(GenAffectInputError, match="AU99"):
        expression_library.blendshapes_from_aus([("99", 1.0)])
    with pytest.raises(GenAffectInputError, match="outside 0..1"):
        expression_library.blendshapes_from_aus([("12", 1.5)])
    with pytest.raises(GenAffectInputError, match="not an Action Unit code"):
        expression_library.blendshapes_from_aus([("AU12", 1.0)])


def test_preset_node_builds_a_labelled_batch_and_suggests_names():
    (batch,) = GenAffectExpressionPreset().build("happy,\n wink left", 0.5)
    assert batch.labels == ["happy", "wink left"] and batch.blendshapes.shape == (2, 52)
    assert shapes(batch.blendshapes[1], "eyeBlinkLeft") == [0.5]
    with pytest.raises(GenAffectInputError, match="Did you mean happy"):
        GenAffectExpressionPreset().build("hapy", 1.0)


# ---- editing, transitions, mixes --------------------------------------------------------------


def test_editor_sliders_add_per_side_and_clip():
    (neutral,) = GenAffectExpressionEditor().edit(1.0, smile_left=0.7, blink_right=1.0, gaze_horizontal=-0.5)
    row = neutral.blendshapes[0]
    assert shapes(row, "mouthSmileLeft", "mouthSmileRight", "eyeBlinkRight") == [0.7, 0.0, 1.0]
    assert shapes(row, "eyeLookOutLeft", "eyeLookInRight", "eyeLookInLeft") == [0.5, 0.5, 0.0]
    (happy,) = GenAffectExpressionPreset().build("happy", 1.0)
    (edited,) = GenAffectExpressionEditor().edit(1.0, happy, smile_left=0.5, smile_right=-0.5)
    assert shapes(edited.blendshapes[0], "mouthSmileLeft", "mouthSmileRight") == [1.0, 0.4]


def test_editor_intensity_scales_blendshapes_and_flame_expression():
    flame = np.zeros((1, FLAME_SIZE), np.float32)
    flame[0, :50] = 0.5
    flame[0, 50:52] = 0.2
    batch = ExpressionBatch(labels=["x"], blendshapes=np.full((1, 52), 0.4, np.float32), flame=flame)
    edited = expression_edit.apply_edits(batch, {"jaw_open": 1.0, "jaw_sideways": -1.0, "blink_left": 0.4}, intensity=0.5)
    assert np.allclose(edited.blendshapes[0, BLENDSHAPE_INDEX["browInnerUp"]], 0.2)
    assert np.allclose(edited.flame[0, :50], 0.25)
    assert np.allclose(edited.flame[0, 50:52], 0.4)
    assert np.allclose(edited.flame[0, 52:55], [expression_edit.JAW_OPEN_RADIANS, -0.2, 0.0])
    assert batch.flame[0, 0] == 0.5  # the input is not modified


def test_interpolation_reproduces_both_endpoints_exactly():
    rng = np.random.default_rng(0)
    a = ExpressionBatch(labels=["a"], blendshapes=rng.random((1, 52)), flame=rng.standard_normal((1, 55)))
    b = ExpressionBatch(labels=["b"], blendshapes=rng.random((1, 52)), flame=rng.standard_normal((1, 55)))
    for easing in expression_edit.EASINGS:
        out = expression_edit.interpolate(a, b, 7, easing)
        assert len(out) == 7
        assert np.array_equal(out.blendshapes[0], a.blendshapes[0]) and np.array_equal(out.blendshapes[-1], b.blendshapes[0])
        assert np.array_equal(out.flame[0], a.flame[0]) and np.array_equal(out.flame[-1], b.flame[0])
    linear = expression_edit.interpolate(a, b, 3, "linear").blendshapes[1]
    assert np.allclose(linear, (a.blendshapes[0] + b.blendshapes[0]) / 2)
    eased = expression_edit.interpolate(a, b, 5, "ease in-out").blendshapes
    assert np.allclose(eased[1], a.blendshapes[0] + (b.blendshapes[0] - a.blendshapes[0]) * (1 - np.cos(np.pi / 4)) / 2, atol=1e-6)


def test_interpolation_pairs_rows_and_rejects_mismatched_batches():
    two = ExpressionBatch(labels=["x", "y"], blendshapes=np.zeros((2, 52)))
    one = ExpressionBatch(labels=["z"], blendshapes=np.ones((1, 52)))
    assert len(expression_edit.interpolate(two, one, 4)) == 8
    three = ExpressionBatch(labels=["p", "q", "r"], blendshapes=np.zeros((3, 52)))
    with pytest.raises(GenAffectInputError, match="A has 2 expressions and B has 3"):
        expression_edit.interpolate(two, three, 4)
    with pytest.raises(GenAffectInputError, match="at least 2"):
        expression_edit.interpolate(one, one, 1)


def test_mix_normalises_weights_and_checks_them():
    batch = ExpressionBatch(labels=["happy", "surprised"], blendshapes=np.stack([np.zeros(52), np.ones(52)]))
    mixed = expression_edit.mix(batch, expression_edit.parse_weights("1, 3"))
    assert np.allclose(mixed.blendshapes, 0.75) and mixed.labels == ["0.25 happy + 0.75 surprised"]
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(GenAffectInputError):
            expression_edit.mix(batch, bad)
    with pytest.raises(GenAffectInputError, match="numbers"):
        expression_edit.parse_weights("a, b")


# ---- prompt text ------------------------------------------------------------------------------

GOLDEN = {
    "neutral": "neutral expression, relaxed face",
    "happy": "eyes slightly narrowed, cheeks raised, mouth corners strongly raised, lower lip slightly pulled down",
    "wink left": "left eye tightly closed, left cheek slightly raised",
    "smirk right": "right mouth corner raised, right mouth corner tightened into dimples",
    "sad": "inner brows raised, brows strongly lowered and drawn together, mouth corners strongly pulled down, chin raised",
    "look left": "gaze strongly turned to the left",
    "yawn": "inner brows slightly raised, outer brows slightly raised, eyes closed, lips slightly stretched sideways, jaw wide open",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_prompt_text_golden(name):
    (batch,) = GenAffectExpressionPreset().build(name, 1.0)
    assert expression_text.describe(batch.blendshapes[0]) == GOLDEN[name]


def test_prompt_merges_symmetric_pairs_and_splits_uneven_ones():
    even = blendshape_vector({"mouthSmileLeft": 0.5, "mouthSmileRight": 0.6})
    assert expression_text.describe(even) == "mouth corners raised"
    uneven = blendshape_vector({"mouthSmileLeft": 0.2, "mouthSmileRight": 0.8, "jawOpen": 0.3})
    assert expression_text.describe(uneven) == "left mouth corner slightly raised, right mouth corner strongly raised, jaw slightly open"


def test_prompt_node_returns_one_prompt_per_expression_and_needs_blendshapes():
    (batch,) = GenAffectExpressionPreset().build("happy, neutral", 1.0)
    prompts, text = GenAffectExpressionToPrompt().describe(batch, "photo of a person,", "studio light")
    assert prompts == [
        "photo of a person, " + GOLDEN["happy"] + " studio light",
        "photo of a person, neutral expression, relaxed face studio light",
    ]
    assert text == "\n".join(prompts)
    with pytest.raises(GenAffectInputError, match="needs blendshapes"):
        GenAffectExpressionToPrompt().describe(ExpressionBatch(labels=["f"], flame=np.zeros((1, 55))), "", "")


EDIT_GOLDEN = {  # happy at intensity 0.5: the same words as the description, in each editor's wording
    "edit: Qwen-Image-Edit": "Change the facial expression of the person in the image: cheeks slightly raised, "
                             "mouth corners raised. Keep the same person with the same face shape, hair, head pose "
                             "and gaze, clothing, lighting and background.",
    "edit: FLUX.2": "Change only the person's facial expression: cheeks slightly raised, mouth corners raised. Keep "
                    "the same person with the same face shape, hair, head pose and gaze, clothing, lighting and "
                    "background unchanged.",
    "edit: FLUX.1 Kontext": "Change the person's facial expression: cheeks slightly raised, mouth corners raised, "
                            "while keeping the same person with the same face shape, hair, head pose and gaze, "
                            "clothing, lighting and background.",
}


@pytest.mark.parametrize("style", sorted(EDIT_GOLDEN))
def test_edit_instructions_say_what_to_change_and_what_to_keep_in_each_editors_wording(style):
    (batch,) = GenAffectExpressionPreset().build("happy, neutral", 0.5)
    prompts, _ = GenAffectExpressionToPrompt().describe(batch, "ignored prefix,", "ignored suffix", style=style)
    assert prompts[0] == EDIT_GOLDEN[style]
    assert "neutral expression, relaxed face" in prompts[1] and "ignored" not in prompts[1]


TURN_GOLDEN = {  # happy at 0.5 with the head turned 20 degrees to the subject's left and the chin lowered 10
    "edit: Qwen-Image-Edit": "Change the facial expression of the person in the image: cheeks slightly raised, "
                             "mouth corners raised. Pose the head: turned about 20 degrees to their left, chin lowered "
                             "about 10 degrees. Keep the same person with the same face shape, hair, gaze, clothing, "
                             "lighting and background.",
    "edit: FLUX.2": "Change only the person's facial expression: cheeks slightly raised, mouth corners raised, with "
                    "the head turned about 20 degrees to their left, chin lowered about 10 degrees. Keep the same "
                    "person with the same face shape, hair, gaze, clothing, lighting and background unchanged.",
    "edit: FLUX.1 Kontext": "Change the person's facial expression: cheeks slightly raised, mouth corners raised, and "
                            "pose the head turned about 20 degrees to their left, chin lowered about 10 degrees, while "
                            "keeping the same person with the same face shape, hair, gaze, clothing, lighting and "
                            "background.",
    "description": "close-up portrait photo of a person, cheeks slightly raised, mouth corners raised, head turned "
                   "about 20 degrees to their left, chin lowered about 10 degrees",
}


def turned(batch, *turns):
    return replace(batch, head_turn=np.array(turns, np.float32))


@pytest.mark.parametrize("style", sorted(TURN_GOLDEN))
def test_a_head_turn_is_worded_in_each_editors_wording_and_leaves_the_keep_words(style):
    (batch,) = GenAffectExpressionPreset().build("happy, happy", 0.5)
    node = GenAffectExpressionToPrompt()
    prompts, _ = node.describe(turned(batch, (20.0, 10.0, 0.0), (1.0, -2.0, 0.0)), "close-up portrait photo of a person,",
                               "", style=style)
    assert prompts[0] == TURN_GOLDEN[style]
    unturned, _ = node.describe(batch, "close-up portrait photo of a person,", "", style=style)
    assert prompts[1] == unturned[0]  # a turn under 2.5 degrees is no turn: the head pose and gaze are kept


def test_turn_words_follow_the_editors_sliders_signs_and_round_to_five_degrees():
    assert expression_text.describe_turn((-12.0, -7.4, 9.0)) == (
        "turned about 10 degrees to their right, chin raised about 5 degrees, tilted about 10 degrees towards their "
        "right shoulder")
    assert expression_text.describe_turn((0.0, 0.0, -3.0)) == "tilted about 5 degrees towards their left shoulder"
    assert expression_text.describe_turn((2.4, -2.4, 0.0)) == ""


def test_the_keep_words_drop_what_changes_a_moved_gaze_keeps_the_head_pose():
    (batch,) = GenAffectExpressionPreset().build("happy", 0.5)
    looking = replace(batch, blendshapes=batch.blendshapes.copy())
    looking.blendshapes[0, [BLENDSHAPE_INDEX["eyeLookOutLeft"], BLENDSHAPE_INDEX["eyeLookInRight"]]] = 0.6
    node = GenAffectExpressionToPrompt()
    (prompt,), _ = node.describe(looking, "", "", style="edit: Qwen-Image-Edit")
    assert "gaze turned to the left" in prompt and "hair, head pose, clothing" in prompt
    (prompt,), _ = node.describe(turned(looking, (0.0, 0.0, 15.0)), "", "", style="edit: Qwen-Image-Edit")
    assert "Pose the head: tilted about 15 degrees towards their right shoulder" in prompt
    assert "hair, clothing" in prompt and "gaze," not in prompt.split("Keep")[1]
    assert expression_text.kept("her freckles and head pose and gaze", True, True) == "her freckles"
    assert expression_text.kept("head pose and gaze, hair", True, False) == "gaze, hair"
    assert expression_text.kept("her freckles", False, False) == "her freckles"  # no such item: as written


def test_own_template_places_the_turn_where_it_says_or_after_the_expression_and_pixelsmile_refuses_one():
    (batch,) = GenAffectExpressionPreset().build("surprised", 1.0)
    node = GenAffectExpressionToPrompt()
    words = expression_text.describe(batch.blendshapes[0])
    prompts, _ = node.describe(turned(batch, (-30.0, 0.0, 0.0)), "", "", style="edit: own template", keep="her hair",
                               template="Make her look like this: {expression}. Head: {turn}. Keep {keep}.")
    assert prompts == [f"Make her look like this: {words}. Head: turned about 30 degrees to their right. Keep her hair."]
    prompts, _ = node.describe(turned(batch, (-30.0, 0.0, 0.0)), "", "", style="edit: own template", keep="her hair",
                               template="Make her look like this: {expression}; keep {keep}.")
    assert prompts == [f"Make her look like this: {words}, head turned about 30 degrees to their right; keep her hair."]
    with pytest.raises(GenAffectInputError, match="cannot ask for a head turn"):
        node.describe(turned(batch, (10.0, 0.0, 0.0)), "", "", style="edit: PixelSmile")


def test_own_edit_template_and_keep_words_are_used_and_a_template_without_the_expression_is_refused():
    (batch,) = GenAffectExpressionPreset().build("surprised", 1.0)
    node = GenAffectExpressionToPrompt()
    prompts, _ = node.describe(batch, "", "", style="edit: own template", keep="her freckles",
                               template="Make her look like this: {expression}; keep {keep}.")
    assert prompts == ["Make her look like this: " + expression_text.describe(batch.blendshapes[0]) + "; keep her freckles."]
    with pytest.raises(GenAffectInputError, match=r"must contain \{expression\}"):
        node.describe(batch, "", "", style="edit: own template", template="Make her smile.")


def test_every_preset_names_its_pixelsmile_categories_and_every_category_is_reachable():
    from genaffect.models.expression.expression_library import library, pixelsmile

    settings = pixelsmile()
    assert len(settings["categories"]) == 12 and "{category}" in settings["instruction"]
    allowed = set(settings["categories"]) | {settings["neutral"]}
    reached = set()
    for name, entry in library().items():
        assert len(entry.pixelsmile) <= 2 and set(entry.pixelsmile) <= allowed, name
        reached |= set(entry.pixelsmile)
    assert reached == allowed  # each of PixelSmile's categories (and its neutral) comes from some preset
    basic = {"happy": "happy", "sad": "sad", "fearful": "fear", "angry": "angry", "surprised": "surprised",
             "disgusted": "disgust", "contempt": "contempt", "neutral": "neutral"}
    assert {name: library()[name].pixelsmile for name in basic} == {n: (c,) for n, c in basic.items()}


def test_pixelsmile_style_names_the_category_its_lora_was_trained_on_and_explains_what_it_cannot_name():
    (batch,) = GenAffectExpressionPreset().build("neutral, happy, fearful, worried", 0.4)
    prompts, _ = GenAffectExpressionToPrompt().describe(batch, "", "", style="edit: PixelSmile")
    assert prompts == ["Edit the person to show a neutral expression", "Edit the person to show a happy expression",
                       "Edit the person to show a fear expression", "Edit the person to show a anxious expression"]
    for names, message in (("happily surprised", "a blend of PixelSmile's happy and surprised"),
                           ("wink left", "none of PixelSmile's categories")):
        with pytest.raises(GenAffectInputError, match=message):
            GenAffectExpressionToPrompt().describe(GenAffectExpressionPreset().build(names, 1.0)[0], "", "",
                                                   style="edit: PixelSmile")
    with pytest.raises(GenAffectInputError, match="'edited' is not one"):
        GenAffectExpressionToPrompt().describe(ExpressionBatch(labels=["edited"], blendshapes=np.zeros((1, 52))), "",
                                               "", style="edit: PixelSmile")


def test_an_empty_expression_batch_is_refused_where_it_is_made():
    with pytest.raises(GenAffectInputError, match="needs at least one expression"):
        ExpressionBatch(labels=[], blendshapes=np.zeros((0, 52)))
    (batch,) = GenAffectExpressionPreset().build("happy", 1.0)
    with pytest.raises(GenAffectInputError, match="needs at least one expression"):
        batch.rows([])


@pytest.mark.parametrize("shape", [(1, 0, 0, 3), (1, 64, 0, 3), (0, 64, 64, 3)])
def test_an_empty_preview_photo_is_refused_by_the_preset_and_the_editor(shape):
    import torch

    photo = torch.zeros(shape)
    with pytest.raises(GenAffectInputError, match="photo: the (images are .* empty|image batch is empty)"):
        GenAffectExpressionPreset().build("happy", 1.0, photo=photo)
    with pytest.raises(GenAffectInputError, match="photo: the (images are .* empty|image batch is empty)"):
        GenAffectExpressionEditor().edit(1.0, photo=photo)
    assert GenAffectExpressionPreset().build("happy", 1.0, photo=torch.zeros(1, 8, 8, 3))[0].labels == ["happy"]


def test_blendshapes_outside_0_1_are_refused_and_flame_outside_smirks_limits_is_brought_inside_with_a_warning(caplog):
    import logging

    with pytest.raises(GenAffectInputError, match="blendshapes run from 0 to 1.5; each is a movement strength in 0..1"):
        ExpressionBatch(labels=["x"], blendshapes=np.full((1, 52), 1.5) * (np.arange(52) > 0))
    flame = np.zeros((1, 55), np.float32)
    flame[0, 50], flame[0, 52], flame[0, 53] = 1.4, -0.3, 0.5
    with caplog.at_level(logging.WARNING):
        batch = ExpressionBatch(labels=["x"], flame=flame)
    assert batch.flame[0, 50] == 1.0 and batch.flame[0, 52] == 0.0 and batch.flame[0, 53] == pytest.approx(0.2)
    assert "brought inside them (by up to 0.4)" in caplog.text


def test_interpolating_expressions_that_share_no_representation_is_refused():
    from genaffect.nodes.expression_nodes import GenAffectExpressionInterpolate

    (blendshapes_only,) = GenAffectExpressionPreset().build("happy", 1.0)
    flame_only = ExpressionBatch(labels=["f"], flame=np.zeros((1, 55), np.float32))
    with pytest.raises(GenAffectInputError, match="share no representation"):
        GenAffectExpressionInterpolate().interpolate(blendshapes_only, flame_only, 3, "linear")


def test_editor_intensity_exaggerates_flame_only_up_to_three_standard_deviations_and_says_so(caplog):
    """Blendshapes saturate at 1; FLAME's coefficients have no such ceiling, so chained editors at intensity 2 grew
    them without bound (16x after four). They now stop at FLAME's +-3 standard deviations (or the input's own size)."""
    flame = np.zeros((1, FLAME_SIZE), np.float32)
    flame[0, :50] = np.linspace(-2.5, 2.5, 50)
    batch = ExpressionBatch(labels=["x"], blendshapes=np.zeros((1, 52), np.float32), flame=flame)
    edited = batch
    with caplog.at_level("WARNING"):
        for _ in range(4):
            edited = expression_edit.apply_edits(edited, {}, intensity=2.0)
    assert np.abs(edited.flame[0, :50]).max() == pytest.approx(3.0)
    assert "kept within 3.0" in caplog.text
    scaled = expression_edit.apply_edits(batch, {}, intensity=1.2).flame[0, :50]
    assert np.allclose(scaled, np.clip(flame[0, :50] * 1.2, -3.0, 3.0))  # within the limit the scaling is exact
    big = flame.copy()
    big[0, 0] = -4.0  # an estimate already beyond 3 is never shrunk by an exaggeration
    assert expression_edit.apply_edits(ExpressionBatch(["y"], blendshapes=np.zeros((1, 52), np.float32), flame=big), {},
                                       intensity=2.0).flame[0, 0] == pytest.approx(-4.0)


@pytest.mark.parametrize("field", ["prefix", "suffix"])
def test_a_line_break_in_prefix_or_suffix_is_refused_since_text_lists_one_prompt_per_line(field):
    with pytest.raises(GenAffectInputError, match=f"^{field} holds a line break"):
        GenAffectExpressionToPrompt().describe(preset_batch("neutral, happy"), **{"prefix": "", "suffix": "",
                                                                                  field: "a photo\nof"})


def test_line_breaks_typed_in_the_keep_and_template_boxes_become_spaces():
    prompts, text = GenAffectExpressionToPrompt().describe(
        preset_batch("neutral, happy"), "", "", style="edit: own template", keep="the hair\nthe clothes",
        template="Make this face:\n  {expression}.\r\nKeep {keep}.")
    assert len(text.splitlines()) == len(prompts) == 2
    assert prompts[0].startswith("Make this face: ") and prompts[0].endswith(". Keep the hair the clothes.")


@pytest.mark.parametrize("steps", [2.5, "4", float("nan"), 1])
def test_interpolate_steps_must_be_a_whole_number_of_at_least_two(steps):
    with pytest.raises(GenAffectInputError, match="^steps is "):
        expression_edit.interpolate(preset_batch("neutral"), preset_batch("happy"), steps)
    assert len(expression_edit.interpolate(preset_batch("neutral"), preset_batch("happy"), 3.0)) == 3


def preset_batch(names: str) -> ExpressionBatch:
    return GenAffectExpressionPreset().build(names, 1.0)[0]


def test_head_turns_give_every_expression_once_per_turn_added_to_its_own_turn():
    from genaffect.nodes.expression_nodes import GenAffectHeadTurns

    (batch,) = GenAffectExpressionPreset().build("happy, sad", 1.0)
    batch = replace(batch, head_turn=np.array([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32))
    (sheet,) = GenAffectHeadTurns().turn("straight, yaw -20, Yaw 10 pitch -5", batch)
    assert sheet.labels == ["happy, straight", "happy, yaw -20", "happy, yaw 10 pitch -5",
                            "sad, straight", "sad, yaw -20", "sad, yaw 10 pitch -5"]
    np.testing.assert_array_equal(sheet.head_turn, [[5, 0, 0], [-15, 0, 0], [15, -5, 0],
                                                    [0, 0, 0], [-20, 0, 0], [10, -5, 0]])
    np.testing.assert_array_equal(sheet.blendshapes[:3], np.repeat(batch.blendshapes[:1], 3, axis=0))
    (neutral,) = GenAffectHeadTurns().turn("roll 12")
    assert neutral.labels == ["neutral, roll 12"] and neutral.head_turn.tolist() == [[0.0, 0.0, 12.0]]


@pytest.mark.parametrize("turns, message", [("yaw", "axis-degree pairs"), ("tilt 10", "unknown axis 'tilt'"),
                                            ("yaw ten", "'ten' is not a number"), ("pitch 95", "within"),
                                            ("yaw nan", "within"), (" , ", "no head turns")])
def test_bad_head_turns_are_refused_saying_what_to_write(turns, message):
    with pytest.raises(GenAffectInputError, match=message):
        expression_edit.parse_turns(turns)


def test_interpolate_and_mix_carry_the_head_turn_an_unturned_side_counting_as_straight():
    from genaffect.nodes.expression_nodes import GenAffectExpressionInterpolate, GenAffectExpressionMix, GenAffectHeadTurns

    (straight,) = GenAffectExpressionPreset().build("neutral", 1.0)
    (turned_happy,) = GenAffectHeadTurns().turn("yaw 20 roll -10", GenAffectExpressionPreset().build("happy", 1.0)[0])
    (steps,) = GenAffectExpressionInterpolate().interpolate(straight, turned_happy, 3, "linear")
    np.testing.assert_allclose(steps.head_turn, [[0, 0, 0], [10, 0, -5], [20, 0, -10]])
    both = concatenate([straight, turned_happy])
    (mixed,) = GenAffectExpressionMix().mix(both, "1, 3")
    np.testing.assert_allclose(mixed.head_turn, [[15.0, 0.0, -7.5]])
