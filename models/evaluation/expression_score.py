"""Scores of a set of generated faces named by their target expression, in the manner of PixelSmile's FFE-Bench
(arXiv 2603.25728): expression accuracy over the six basic categories and over the categories the judge has, the
identity similarity to the person, a copy-paste score, and how often structurally close expressions are read as each
other - with the full confusion matrix. The faces are measured by Face Metrics (``face_metrics.measure``); this module
only names the targets and adds up.

Targets are PixelSmile's 12 category names (angry, confused, contempt, confident, disgust, fear, happy, sad, shy,
sleepy, surprised, anxious), GenAffect's class names (fearful, disgusted, ...) or any library preset; each is scored
against the judge's classes it asks for (``expression_judge.asked_classes``). The judge has classes for 6 of
PixelSmile's 12 (plus neutral): the others are listed as not scored, never counted as misses.

Our readings of FFE-Bench's metrics (its scoring code is not public): **Acc-6** is the share of faces aimed at one of
the six basic categories that the judge reads as it, choosing among those six; **Acc** (over the classes the judge
has) chooses among all its classes; **structural confusion** is, per pair of structurally close expressions (fear and
surprise, anger and disgust, sadness and fear), the share of faces aimed at one read as the other, averaged over the
pairs present; **copy-paste** is the share of faces the copy check flags, and, with held-out photos of the person,
the mean gap between the identity cosine to the reference and to those photos (WithAnyone).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import GenAffectInputError
from ..expression.batch import ExpressionBatch
from ..expression.expression_library import library, pixelsmile, presets
from .expression_judge import PIXELSMILE_CLASS, asked_classes, landmark_judge
from .face_metrics import SetMetrics

SIX = ("happy", "sad", "angry", "fearful", "surprised", "disgusted")  # the six basic categories, as judge classes
STRUCTURAL_PAIRS = (("fearful", "surprised"), ("angry", "disgusted"), ("sad", "fearful"))


def preset_for(target: str) -> str:
    """The library preset a target name stands for: itself, or the first preset made of exactly that PixelSmile
    category (fear -> fearful, confused -> skeptical, shy -> embarrassed, ...)."""
    name = target.strip().lower()
    entries = library()
    if name in entries:
        return name
    if name in pixelsmile()["categories"]:
        return next(n for n, entry in entries.items() if list(entry.pixelsmile) == [name])
    raise GenAffectInputError(f"{target!r} is neither a library expression nor one of PixelSmile's categories "
                              f"({', '.join(pixelsmile()['categories'])}); name each image's folder or file by its "
                              "target.")


def target_batch(targets: list[str]) -> ExpressionBatch:
    """The presets the targets stand for, labelled by preset name (what Face Metrics compares each face with)."""
    return presets([preset_for(t) for t in targets], 1.0)


@dataclass
class ExpressionScore:
    faces: int  # images with a face the judge read
    images: int
    judge: str
    acc6: float | None  # among the six basic categories
    acc6_faces: int
    accuracy: float | None  # over the targets the judge has a class for, choosing among all its classes
    accuracy_faces: int
    not_scored: list[str]  # targets the judge has no class for
    identity_similarity: float | None
    copies: float | None  # share of faces the copy check flags
    copy_paste_gap: float | None  # mean identity to the reference minus to held-out photos of the person
    structural_confusion: float | None
    pair_confusion: dict[str, float] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # target class -> read class -> faces
    pixel_accuracy: float | None = None
    judges_agreement: float | None = None
    both_accuracy: float | None = None  # the two judges averaged

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def summary(self) -> str:
        def percent(value):
            return "n/a" if value is None else f"{value:.1%}"

        lines = [f"{self.faces} of {self.images} faces read by the {self.judge}",
                 f"Acc-6 (six basic categories): {percent(self.acc6)} of {self.acc6_faces}; accuracy over the judge's "
                 f"classes: {percent(self.accuracy)} of {self.accuracy_faces}",
                 f"identity similarity: {'n/a' if self.identity_similarity is None else f'{self.identity_similarity:.3f}'}"
                 f"; copies: {percent(self.copies)}"
                 + ("" if self.copy_paste_gap is None else f"; copy-paste gap {self.copy_paste_gap:+.3f}"),
                 f"structural confusion: {percent(self.structural_confusion)} ("
                 + ", ".join(f"{k} {v:.0%}" for k, v in self.pair_confusion.items()) + ")"]
        if self.not_scored:
            lines.append(f"not scored (the judge has no class for them): {', '.join(self.not_scored)}")
        if self.pixel_accuracy is not None:
            lines.append(f"pixel judge accuracy {percent(self.pixel_accuracy)}, judges agree on "
                         f"{percent(self.judges_agreement)}, both judges averaged {percent(self.both_accuracy)}")
        return "\n".join(lines)


def score(metrics: SetMetrics, targets: list[str]) -> ExpressionScore:
    """Add up Face Metrics' readings of faces aimed at ``targets`` (one per image)."""
    if len(targets) != len(metrics.images):
        raise GenAffectInputError(f"{len(targets)} targets for {len(metrics.images)} images; name one per image.")
    classes = landmark_judge().classes
    read = [(m, asked_classes(preset_for(t))) for m, t in zip(metrics.images, targets)]
    judged = [(m, asked) for m, asked in read if m.judge_probabilities is not None]
    six = [(m, asked[0]) for m, asked in judged if len(asked) == 1 and asked[0] in SIX]
    six_right = [max(SIX, key=lambda c: m.judge_probabilities[c]) == target for m, target in six]
    scored = [(m, asked) for m, asked in judged if asked]
    confusion: dict[str, dict[str, int]] = {}
    for m, asked in scored:
        if len(asked) == 1:
            row = confusion.setdefault(asked[0], dict.fromkeys(classes, 0))
            row[m.judge_top] += 1
    pairs = {}
    for a, b in STRUCTURAL_PAIRS:
        shares = [confusion[x][y] / sum(confusion[x].values()) for x, y in ((a, b), (b, a)) if x in confusion]
        if shares:
            pairs[f"{a}/{b}"] = float(np.mean(shares))
    found = [m for m in metrics.images if m.face_found]
    gaps = [m.identity_cosine - m.held_out_cosine for m in found if m.held_out_cosine is not None]
    unscored = sorted({t for (m, asked), t in zip(read, targets) if not asked})
    return ExpressionScore(
        faces=len(judged), images=len(metrics.images),
        judge=judged[0][0].judge if judged else "landmark judge",
        acc6=float(np.mean(six_right)) if six_right else None, acc6_faces=len(six_right),
        accuracy=float(np.mean([m.judge_correct for m, _ in scored])) if scored else None, accuracy_faces=len(scored),
        not_scored=unscored,
        identity_similarity=float(np.mean([m.identity_cosine for m in found])) if found else None,
        copies=float(np.mean([bool(m.copy_suspected) for m in found])) if found else None,
        copy_paste_gap=float(np.mean(gaps)) if gaps else None,
        structural_confusion=float(np.mean(list(pairs.values()))) if pairs else None,
        pair_confusion=pairs, confusion=confusion,
        pixel_accuracy=metrics.pixel_accuracy, judges_agreement=metrics.judges_agreement,
        both_accuracy=metrics.both_accuracy,
    )


def target_of_file(relative_path: str) -> str | None:
    """The target a file is named by: its folder (``happy/001.png``) or the start of its name (``happy_001.png``,
    ``fear-3.jpg``, ``sad.png``); None when neither names a category or library expression."""
    parts = relative_path.replace("\\", "/").split("/")
    names = set(library()) | set(pixelsmile()["categories"]) | set(PIXELSMILE_CLASS)
    if len(parts) > 1 and parts[-2].strip().lower() in names:
        return parts[-2].strip().lower()
    stem = parts[-1].rsplit(".", 1)[0].lower().replace("-", " ").replace("_", " ")
    matches = [n for n in names if stem == n or stem.startswith(n + " ")]
    return max(matches, key=len) if matches else None
