"""Keep the best of K candidates per expression: the faces that are the person and show the asked-for
expression (issue: users want the sheet to come out right, not only a report).

Candidates come in rounds: ``[round 1: expression 1..N, round 2: expression 1..N, ...]`` (what K runs of a
sampler with different seeds give, batched). Each is scored by Face Metrics against its own target; the
order is: passing (:func:`failures` is empty) first, then a face found, not copied from a reference, nearest
its own target of the set, then the highest identity cosine minus expression error (both on comparable 0..1
scales), and the earlier candidate on a tie.

Whether a candidate *passes* is the one rule both Select Best and guarded sampling
(``models/sampling_guard.py``) use: a face found, not suspected to be copied from a reference, not nearer
another expression's target of the set, not showing the reference photo's own expression instead of its
target (when Face Metrics judged it), and, when a :class:`PassRule` sets them, identity, expression error and
head pose error within its limits. With the default rule passing is exactly the gates that follow it in the order, so
the ranking is the same with or without limits until one is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import GenAffectInputError
from ..expression.batch import ExpressionBatch
from .face_metrics import ImageMetrics, SetMetrics


@dataclass(frozen=True)
class PassRule:
    """The limits a candidate must meet besides the gates every candidate meets (a face, not copied, nearest
    its own target, not the reference photo's expression). None: no limit."""

    min_identity: float | None = None  # ArcFace cosine to the reference identity
    max_expression_error: float | None = None  # Face Metrics' blendshape L1 to the candidate's own target
    expression_measured: bool = False  # the expression is checked: a face the estimator cannot read fails
    # the largest of Face Metrics' yaw, pitch and roll errors (degrees; needs the photo's measured pose)
    max_pose_error: float | None = None


def failures(metrics: ImageMetrics, rule: PassRule = PassRule()) -> list[str]:
    """Why a candidate does not pass, in words (empty: it passes)."""
    m = metrics
    if not m.face_found:
        return [m.note or "no face"]
    reasons = []
    if m.copy_suspected is True:
        reasons.append("copied from a reference photo (nearer to it than the person's own photos are to each other)")
    if m.expression_nearest is False:
        reasons.append("nearer another expression's target than its own")
    if m.expression_copied is True:
        reasons.append("shows the reference photo's expression instead of its target")
    if rule.min_identity is not None and (m.identity_cosine is None or m.identity_cosine < rule.min_identity):
        reasons.append(f"identity cosine {_number(m.identity_cosine)} below {rule.min_identity:.2f}")
    if rule.expression_measured and m.blendshape_l1 is None:
        reasons.append("expression not read (the estimator found no face)")
    if rule.max_expression_error is not None and m.blendshape_l1 is not None \
            and m.blendshape_l1 > rule.max_expression_error:
        reasons.append(f"expression error {m.blendshape_l1:.3f} above {rule.max_expression_error:.3f}")
    if rule.max_pose_error is not None:
        if m.pose_error is None:
            reasons.append("head pose not measured (the estimator found no face, or no reference pose)")
        elif max(m.pose_error) > rule.max_pose_error:
            axis = ("yaw", "pitch", "roll")[max(range(3), key=lambda i: m.pose_error[i])]
            reasons.append(f"head pose off by {max(m.pose_error):.1f} degrees ({axis}), above {rule.max_pose_error:g}")
    return reasons


def passes(metrics: ImageMetrics, rule: PassRule = PassRule()) -> bool:
    return not failures(metrics, rule)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@dataclass
class Choice:
    expression: int  # 0..N-1
    candidate: int  # 0..K-1 (the round)
    index: int  # in the candidates' batch
    metrics: ImageMetrics
    chosen: bool = False


def candidate_targets(target: ExpressionBatch, images: int, candidates: int) -> ExpressionBatch:
    """The target of every image of a round-major batch of ``candidates`` x N."""
    expressions = len(target)
    if candidates < 1 or images != expressions * candidates:
        raise GenAffectInputError(
            f"{images} images for {expressions} expressions x {candidates} candidates; give the candidates in rounds "
            f"(all {expressions} expressions, then all again, ...), {expressions * candidates} images in all.")
    return target.rows([i for _ in range(candidates) for i in range(expressions)])


def rank_key(choice: Choice, rule: PassRule = PassRule()) -> tuple:
    """Smaller is better: passing, a face, not copied, nearest its own target, not showing the reference
    photo's expression, identity minus expression error, the earlier candidate."""
    m = choice.metrics
    score = (m.identity_cosine or 0.0) - (m.blendshape_l1 or 0.0)
    return (not passes(m, rule), not m.face_found, m.copy_suspected is True, m.expression_nearest is False,
            m.expression_copied is True, -score, choice.candidate)


def mark_best(choices: list[Choice], expressions: int, rule: PassRule = PassRule()) -> list[Choice]:
    """Mark the best candidate of each expression (that has one) as chosen; returns the chosen, by expression."""
    chosen = []
    for expression in range(expressions):
        mine = [c for c in choices if c.expression == expression]
        for choice in mine:
            choice.chosen = False
        if mine:
            best = min(mine, key=lambda c: rank_key(c, rule))
            best.chosen = True
            chosen.append(best)
    return chosen


def choose(metrics: SetMetrics, expressions: int, candidates: int, rule: PassRule = PassRule()) -> list[Choice]:
    """Every candidate, with the best of each expression marked; in the batch's order."""
    if len(metrics.images) != expressions * candidates:
        raise GenAffectInputError(f"metrics for {len(metrics.images)} images, expected {expressions * candidates}.")
    choices = [Choice(index % expressions, index // expressions, index, m) for index, m in enumerate(metrics.images)]
    mark_best(choices, expressions, rule)
    return choices
