"""Blendshapes -> one deterministic natural-language description, for text-conditioned DiTs.

Each facial movement is a phrase with a subject and a participle ("inner brows" + "raised"). Its
strength picks an adverb by fixed thresholds. A left/right pair moving about equally is merged into
one two-sided phrase; otherwise each side is described on its own ("left mouth corner slightly
raised"). "Left" and "right" are the subject's own sides. Regions are described in a fixed order
(brows, eyes, cheeks, nose, mouth, jaw), so the same numbers always give the same text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import GenAffectInputError
from .batch import BLENDSHAPE_INDEX
from .expression_library import library, pixelsmile

VISIBLE = 0.15  # below this a movement is not mentioned
STRONG = 0.65  # above this it is "strongly" (or the phrase's own strong word)
PAIR_TOLERANCE = 0.2  # sides closer than this are described together
NEUTRAL_TEXT = "neutral expression, relaxed face"


@dataclass(frozen=True)
class Movement:
    subject: str  # what moves, both sides (or the only one)
    participle: str
    shapes: tuple[str, ...] = ()  # side-less: the strength is the mean of these blendshapes
    stem: str = ""  # two-sided: blendshapes stem + "Left" / stem + "Right"
    side_subject: str = ""  # "{side} ..." when one side is described alone
    strong: str = "strongly"


def _pair(stem: str, subject: str, side_subject: str, participle: str, strong: str = "strongly") -> Movement:
    return Movement(subject, participle, stem=stem, side_subject=side_subject, strong=strong)


def _single(subject: str, participle: str, *shapes: str, strong: str = "strongly") -> Movement:
    return Movement(subject, participle, shapes=shapes, strong=strong)


MOVEMENTS = (
    _single("inner brows", "raised", "browInnerUp"),
    _pair("browOuterUp", "outer brows", "{side} outer brow", "raised"),
    _pair("browDown", "brows", "{side} brow", "lowered and drawn together"),
    _pair("eyeBlink", "eyes", "{side} eye", "closed", "tightly"),
    _pair("eyeSquint", "eyes", "{side} eye", "narrowed"),
    _pair("eyeWide", "eyes", "{side} eye", "wide open", "very"),
    _single("gaze", "turned up", "eyeLookUpLeft", "eyeLookUpRight"),
    _single("gaze", "turned down", "eyeLookDownLeft", "eyeLookDownRight"),
    # gaze to the subject's left moves the left eye outward and the right eye inward
    _single("gaze", "turned to the left", "eyeLookOutLeft", "eyeLookInRight"),
    _single("gaze", "turned to the right", "eyeLookInLeft", "eyeLookOutRight"),
    _single("cheeks", "puffed out", "cheekPuff"),
    _pair("cheekSquint", "cheeks", "{side} cheek", "raised"),
    _pair("noseSneer", "nose", "{side} nostril", "wrinkled"),
    _pair("mouthSmile", "mouth corners", "{side} mouth corner", "raised"),
    _pair("mouthFrown", "mouth corners", "{side} mouth corner", "pulled down"),
    _pair("mouthDimple", "mouth corners", "{side} mouth corner", "tightened into dimples"),
    _pair("mouthStretch", "lips", "{side} lip corner", "stretched sideways"),
    _pair("mouthUpperUp", "upper lip", "{side} upper lip", "raised"),
    _pair("mouthLowerDown", "lower lip", "{side} lower lip", "pulled down"),
    _pair("mouthPress", "lips", "{side} lips", "pressed together", "firmly"),
    _single("lips", "puckered", "mouthPucker"),
    _single("lips", "funnelled", "mouthFunnel"),
    _single("upper lip", "rolled in", "mouthRollUpper"),
    _single("lower lip", "rolled in", "mouthRollLower"),
    _single("upper lip", "pushed up", "mouthShrugUpper"),
    _single("chin", "raised", "mouthShrugLower"),
    _single("mouth", "pulled to the left", "mouthLeft"),
    _single("mouth", "pulled to the right", "mouthRight"),
    _single("jaw", "open", "jawOpen", strong="wide"),
    _single("jaw", "pushed forward", "jawForward"),
    _single("jaw", "shifted to the left", "jawLeft"),
    _single("jaw", "shifted to the right", "jawRight"),
)


def _adverb(value: float, movement: Movement) -> str:
    if value > STRONG:
        return movement.strong + " "
    if value < 0.35:
        return "slightly "
    return ""


def _phrase(subject: str, value: float, movement: Movement) -> str:
    return f"{subject} {_adverb(value, movement)}{movement.participle}"


def describe(blendshapes: np.ndarray) -> str:
    """One description for a (52,) blendshape vector."""
    value = lambda name: float(blendshapes[BLENDSHAPE_INDEX[name]])  # noqa: E731
    phrases = []
    for movement in MOVEMENTS:
        if not movement.stem:
            strength = sum(value(shape) for shape in movement.shapes) / len(movement.shapes)
            if strength >= VISIBLE:
                phrases.append(_phrase(movement.subject, strength, movement))
            continue
        left, right = value(movement.stem + "Left"), value(movement.stem + "Right")
        if left >= VISIBLE and right >= VISIBLE and abs(left - right) <= PAIR_TOLERANCE:
            phrases.append(_phrase(movement.subject, (left + right) / 2, movement))
            continue
        for side, strength in (("left", left), ("right", right)):
            if strength >= VISIBLE:
                phrases.append(_phrase(movement.side_subject.format(side=side), strength, movement))
    return ", ".join(phrases) if phrases else NEUTRAL_TEXT


LINE_BREAK = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")  # what str.splitlines() splits on


def one_line(name: str, text: str) -> str:
    """``text`` when it holds no line break: prompts are given one per line, so a break inside one would make
    two prompts of it downstream."""
    if LINE_BREAK.search(text):
        raise GenAffectInputError(f"{name} holds a line break; the prompts are listed one per line, so each must be "
                                  f"one line. Write {name} on one line.")
    return text


def joined_lines(text: str) -> str:
    """A multi-line text box's text as one line: each line break (and the spaces around it) becomes one space."""
    return re.sub(r"\s*" + LINE_BREAK.pattern + r"+\s*", " ", text).strip()


def describe_batch(blendshapes: np.ndarray, prefix: str = "", suffix: str = "", turns=None) -> list[str]:
    """One prompt per row, with optional words before and after the description (each one line) and the row's
    head turn (``turns`` (N, 3), or None) worded after the expression."""
    words = (one_line("prefix", prefix).strip(), one_line("suffix", suffix).strip())
    return [" ".join(part for part in (words[0], describe_row(row, None if turns is None else turns[index]), words[1])
                     if part) for index, row in enumerate(blendshapes)]


# Edit instructions for instruction editors: what to change (the description above) and what to keep.
# Wording follows each family's published prompting habits: Qwen-Image-Edit takes direct imperative
# edits, FLUX.1 Kontext's guide asks for "change X while keeping Y" with the identity named explicitly,
# FLUX.2 reads a short edit followed by what stays unchanged.
KEEP = "the same person with the same face shape, hair, head pose, clothing, lighting and background"
EDIT_TEMPLATES = {
    "qwen_image_edit": "Change the facial expression of the person in the image: {expression}. Keep {keep}.",
    "flux2": "Change only the person's facial expression: {expression}. Keep {keep} unchanged.",
    "kontext": "Change the person's facial expression: {expression}, while keeping {keep}.",
}
# The same where the head turns ({turn}: "turned about 20 degrees to their left, chin lowered about 10 degrees").
TURN_TEMPLATES = {
    "qwen_image_edit": "Change the facial expression of the person in the image: {expression}. Pose the head: {turn}. "
                       "Keep {keep}.",
    "flux2": "Change only the person's facial expression: {expression}, with the head {turn}. Keep {keep} unchanged.",
    "kontext": "Change the person's facial expression: {expression}, and pose the head {turn}, while keeping {keep}.",
}
PLACEHOLDER = "{expression}"
TURN_PLACEHOLDER = "{turn}"
TURN_VISIBLE = 2.5  # degrees: a smaller turn is not worded (and the head pose counts as kept)
GAZE_SHAPES = tuple(f"eyeLook{way}{side}" for way in ("Up", "Down", "In", "Out") for side in ("Left", "Right"))
KEPT_POSE = re.compile(r"head pose(?: and gaze)?")  # the item of a keep list that says the pose stays


def _degrees(value: float) -> str:
    return f"about {max(5, int(5 * round(abs(value) / 5)))} degrees"


def describe_turn(turn) -> str:
    """Words for a head turn (yaw, pitch, roll in degrees, the Editor's head sliders and Warp Expression's
    convention: yaw > 0 towards the image's right = the subject's left, pitch > 0 chin down, roll > 0
    counter-clockwise in the image = towards the subject's right shoulder); "" when every angle is under
    TURN_VISIBLE. Sides are the subject's own, as in the expression's words."""
    yaw, pitch, roll = (float(v) for v in turn)
    parts = []
    if abs(yaw) >= TURN_VISIBLE:
        parts.append(f"turned {_degrees(yaw)} to their {'left' if yaw > 0 else 'right'}")
    if abs(pitch) >= TURN_VISIBLE:
        parts.append(f"chin {'lowered' if pitch > 0 else 'raised'} {_degrees(pitch)}")
    if abs(roll) >= TURN_VISIBLE:
        parts.append(f"tilted {_degrees(roll)} towards their {'right' if roll > 0 else 'left'} shoulder")
    return ", ".join(parts)


def gaze_moves(blendshapes: np.ndarray) -> bool:
    """Whether the expression moves the eyes' gaze enough to be worded (see :func:`describe`)."""
    return any(float(blendshapes[BLENDSHAPE_INDEX[name]]) >= VISIBLE for name in GAZE_SHAPES)


def kept(keep: str, turned: bool, gaze_moved: bool) -> str:
    """The keep words with their head-pose item saying what really stays: "head pose and gaze" when neither
    changes, "head pose" or "gaze" when one does, nothing when both do. A keep text without that item is used as
    written."""
    still = " and ".join(part for part, changes in (("head pose", turned), ("gaze", gaze_moved)) if not changes)
    if still:
        return KEPT_POSE.sub(still, keep, count=1)
    if KEPT_POSE.fullmatch(keep.strip()):
        return ""
    item = KEPT_POSE.pattern
    for with_separator in (r",\s*" + item, r"\s+and\s+" + item, item + r"\s*,\s*", item + r"\s+and\s+", item):
        if re.search(with_separator, keep):  # the item goes with one of its separators
            return re.sub(with_separator, "", keep, count=1).strip()
    return keep


def describe_row(blendshapes: np.ndarray, turn=None) -> str:
    """The expression's words, and the head turn's after them (prompts for text-to-image models)."""
    words = describe(blendshapes)
    turn_words = describe_turn(turn) if turn is not None else ""
    return f"{words}, head {turn_words}" if turn_words else words


def instruction_batch(blendshapes: np.ndarray, template: str, keep: str = KEEP, turns=None) -> list[str]:
    """One edit instruction per row: ``template`` with ``{expression}`` replaced by the row's description
    and ``{keep}`` by ``keep``. A template may be a family name of :data:`EDIT_TEMPLATES` or the user's own.
    ``turns`` (N, 3): a head turn per row (the expression's head_turn); a family's row with a turn takes its
    TURN_TEMPLATES wording, the user's own template its ``{turn}`` (or the words after the expression). The keep
    words say "head pose and gaze" where neither changes (see :func:`kept`)."""
    family = template if template in EDIT_TEMPLATES else None
    template = joined_lines(EDIT_TEMPLATES.get(template, template))  # multi-line boxes, one instruction per line
    keep = joined_lines(keep).strip()
    if PLACEHOLDER not in template:
        raise GenAffectInputError(f"the edit template must contain {PLACEHOLDER} where the expression goes; got "
                                  f"{template!r}.")
    prompts = []
    for index, row in enumerate(blendshapes):
        turn_words = describe_turn(turns[index]) if turns is not None else ""
        expression = describe(row)
        if not turn_words:
            text = template.replace(TURN_PLACEHOLDER, "")
        elif family is not None:
            text = TURN_TEMPLATES[family].replace(TURN_PLACEHOLDER, turn_words)
        elif TURN_PLACEHOLDER in template:
            text = template.replace(TURN_PLACEHOLDER, turn_words)
        else:  # the user's template does not place the turn: it follows the expression's words
            text, expression = template, f"{expression}, head {turn_words}"
        row_keep = kept(keep, bool(turn_words), gaze_moves(row))
        prompts.append(text.replace("{keep}", row_keep).replace(PLACEHOLDER, expression))
    return prompts


def pixelsmile_batch(labels: list[str]) -> list[str]:
    """PixelSmile's instruction for each expression, named by its library label: "Edit the person to show a
    happy expression". Its LoRA was trained on these words alone; intensity and blends come from
    Conditioning Intensity, not from the words."""
    known, settings = library(), pixelsmile()
    prompts = []
    for label in labels:
        if label not in known:
            raise GenAffectInputError(f"PixelSmile's instructions name a category, read from a library preset's name; "
                                      f"{label!r} is not one (use the Expression Preset node).")
        categories = known[label].pixelsmile
        if len(categories) != 1:
            raise GenAffectInputError(
                f"{label!r} is " + ("none of PixelSmile's categories" if not categories else
                                    f"a blend of PixelSmile's {' and '.join(categories)}")
                + "; give one of: " + ", ".join(settings["categories"]) + " (blends: one instruction per category, "
                "mixed by Conditioning Intensity).")
        prompts.append(settings["instruction"].format(category=categories[0]))
    return prompts
