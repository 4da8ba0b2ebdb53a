"""Keep the best of K candidates per expression: the faces that are the person and show the asked-for
expression (issue: users want the sheet to come out right, not only a report).

Candidates come in rounds: ``[round 1: expression 1..N, round 2: expression 1..N, ...]`` (what K runs of a
sampler with different seeds give, batched). Each is scored by Face Metrics against its own target; the
order is: a face found, not copied from a reference, nearest its own target of the set, then the highest
identity cosine minus expression error (both on comparable 0..1 scales), and the earlier candidate on a tie.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import GenAffectInputError
from .expression import ExpressionBatch
from .face_metrics import ImageMetrics, SetMetrics


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


def _rank_key(choice: Choice) -> tuple:
    m = choice.metrics
    score = (m.identity_cosine or 0.0) - (m.blendshape_l1 or 0.0)
    return (not m.face_found, m.copy_suspected is True, m.expression_nearest is False, -score, choice.candidate)


def choose(metrics: SetMetrics, expressions: int, candidates: int) -> list[Choice]:
    """Every candidate, with the best of each expression marked; in the batch's order."""
    if len(metrics.images) != expressions * candidates:
        raise GenAffectInputError(f"metrics for {len(metrics.images)} images, expected {expressions * candidates}.")
    choices = [Choice(index % expressions, index // expressions, index, m) for index, m in enumerate(metrics.images)]
    for expression in range(expressions):
        best = min((c for c in choices if c.expression == expression), key=_rank_key)
        best.chosen = True
    return choices
