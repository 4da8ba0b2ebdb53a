"""Keep the best of K candidates per expression: the faces that are the person and show the asked-for
expression (issue: users want the sheet to come out right, not only a report).

Candidates come in rounds: ``[round 1: expression 1..N, round 2: expression 1..N, ...]`` (what K runs of a
sampler with different seeds give, batched). Each is scored by Face Metrics against its own target and ranked
by these steps, in order; the first step where two candidates differ decides, and the verdict names it:

1. a face was found;
2. **identity first**: the face is the person - its ArcFace cosine to the reference identity is at least the
   rule's ``min_identity`` (else :data:`SAME_PERSON_COSINE`) and, below :data:`CERTAINLY_THE_PERSON`, within
   :data:`IDENTITY_MARGIN` of the best candidate's (a copy of a reference photo included: it is still the person,
   so a stranger never wins because the person's own face was flagged a copy; the floor never rises above
   :data:`CERTAINLY_THE_PERSON`, so a copy cannot push out a face of the person at or above it) - so a face that
   is not the person never beats one that is, whatever its expression;
3. it passes (:func:`failures` is empty: the one rule both Select Best and guarded sampling,
   ``models/evaluation/sampling_guard.py``, use - the gates below and the rule's own limits:
   expression error and head pose error);
4. not a copy of a reference photo, and not showing the reference photo's expression instead of its target;
5. the judge reads the asked-for expression (its top class is one of the target's classes; for targets the
   judge has no class for, the face is nearest its own target of the set's). "The judge" is the landmark judge,
   or, where an expression network read the face too, both judges averaged (:func:`deciding_reading`);
6. the judge's probability of the asked-for class (in steps of :data:`PROBABILITY_STEP`: smaller differences
   are no evidence), then the intensity distance (Face Metrics' blendshape L1 to the target, in steps of
   :data:`DISTANCE_STEP`), then the identity cosine, then the earlier candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import GenAffectInputError
from ..expression.batch import ExpressionBatch
from .face_metrics import ImageMetrics, SetMetrics

# ArcFace cosine at and above which a face counts as the person when the rule sets no identity limit. Measured
# on real photos (INT8 MobileFaceNet; docs/judge.md, "Select Best"): 99.5 % of pairs of different people's photos
# stay below it in KDEF and the Taiwanese corpus, 99.9 % in the wild; photos of one person rarely fall under it.
SAME_PERSON_COSINE = 0.30
# ...but look-alike strangers reach 0.53 (JAFFE: 16 % of stranger pairs above 0.30), so among a pool a face also
# counts as the person only when its cosine is within this of the best candidate's. Compared on half of the posed
# sources' people, 0.08-0.18 all chose no stranger; the widest keeps the most of the person's photos in play.
IDENTITY_MARGIN = 0.18
# At and above this no stranger was measured (the highest stranger cosine to a person's identity: 0.50), so the
# margin never pushes a face this close to the identity out of the person's pool.
CERTAINLY_THE_PERSON = 0.55
PROBABILITY_STEP = 0.05
DISTANCE_STEP = 0.01


@dataclass(frozen=True)
class PassRule:
    """The limits a candidate must meet besides the gates every candidate meets (a face, the person, not copied,
    the asked-for expression, not the reference photo's expression). None: no limit of its own."""

    min_identity: float | None = None  # ArcFace cosine to the reference identity (None: SAME_PERSON_COSINE)
    max_expression_error: float | None = None  # Face Metrics' blendshape L1 to the candidate's own target
    expression_measured: bool = False  # the expression is checked: a face the estimator cannot read fails
    # the largest of Face Metrics' yaw, pitch and roll errors (degrees; needs the photo's measured pose)
    max_pose_error: float | None = None

    @property
    def identity_threshold(self) -> float:
        return SAME_PERSON_COSINE if self.min_identity is None else self.min_identity


@dataclass(frozen=True)
class JudgeReading:
    """The expression reading a candidate is ranked and passed by."""

    judge: str  # which, in words
    top: str | None
    top_probability: float | None
    probability: float | None  # of the asked-for class
    correct: bool | None  # the top class is one the target asks for (None: not judged)


def deciding_reading(m: ImageMetrics) -> JudgeReading:
    """Both judges averaged where an expression network read the face, else the landmark judge. Measured with the
    CI's weak network (docs/judge.md): the average read real photos better than the landmark judge on three sources
    of four and in pools of real photos chose the right face more often on the same three (JAFFE within 2 points)."""
    if m.both_correct is not None:
        return JudgeReading(f"both judges (the landmark judge and {m.pixel_judge}, averaged)", m.both_top,
                            m.both_top_probability, m.both_probability, m.both_correct)
    return JudgeReading(m.judge, m.judge_top, m.judge_top_probability, m.judge_probability, m.judge_correct)


def is_person(metrics: ImageMetrics, rule: PassRule = PassRule()) -> bool:
    return metrics.identity_cosine is not None and metrics.identity_cosine >= rule.identity_threshold


def reads_as_asked(metrics: ImageMetrics) -> bool | None:
    """Does the expression judge read the asked-for expression? Its top class where the target has classes,
    else the nearest-target rule; None where neither was measured."""
    reading = deciding_reading(metrics)
    if reading.correct is not None:
        return reading.correct
    return metrics.expression_nearest


def failures(metrics: ImageMetrics, rule: PassRule = PassRule()) -> list[str]:
    """Why a candidate does not pass, in words naming the judge and the number (empty: it passes)."""
    m = metrics
    if not m.face_found:
        return [m.note or "no face"]
    reasons = []
    if not is_person(m, rule):
        reasons.append(f"not the person: identity cosine {_number(m.identity_cosine)} below "
                       f"{rule.identity_threshold:.2f}")
    if m.copy_suspected is True:
        reasons.append(f"copied from a reference photo ({m.copy_reason or 'too close to it'})")
    if m.expression_copied is True:
        reasons.append("shows the reference photo's expression instead of its target"
                       + (f" ({m.judge} reads {m.judge_top})" if m.judge_top else ""))
    reading = deciding_reading(m)
    if reading.correct is False:
        reasons.append(f"{reading.judge} reads {reading.top} ({_number(reading.top_probability)}), not "
                       f"{'/'.join(m.asked_classes)} ({_number(reading.probability)})")
    elif reading.correct is None and m.expression_nearest is False:
        reasons.append("nearer another expression's target than its own")
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
    return "n/a" if value is None else f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


@dataclass
class Choice:
    expression: int  # 0..N-1
    candidate: int  # 0..K-1 (the round)
    index: int  # in the candidates' batch
    metrics: ImageMetrics
    chosen: bool = False
    verdict: str = ""  # for the chosen one: which step decided against the runner-up, with its numbers


def candidate_targets(target: ExpressionBatch, images: int, candidates: int) -> ExpressionBatch:
    """The target of every image of a round-major batch of ``candidates`` x N."""
    expressions = len(target)
    if candidates < 1 or images != expressions * candidates:
        raise GenAffectInputError(
            f"{images} images for {expressions} expressions x {candidates} candidates; give the candidates in rounds "
            f"(all {expressions} expressions, then all again, ...), {expressions * candidates} images in all.")
    return target.rows([i for _ in range(candidates) for i in range(expressions)])


def _steps(choice: Choice, rule: PassRule, best_identity: float | None = None) -> list[tuple[str, object, str]]:
    """The ranking steps of one candidate among a pool whose best identity cosine is ``best_identity``: (name,
    sort value - smaller is better, the number in words)."""
    m = choice.metrics
    judged = reads_as_asked(m)
    reading = deciding_reading(m)
    floor = rule.identity_threshold if best_identity is None else max(
        rule.identity_threshold, min(best_identity - IDENTITY_MARGIN, CERTAINLY_THE_PERSON))
    return [
        ("a face", not m.face_found, "a face" if m.face_found else "no face"),
        ("identity", not (m.identity_cosine is not None and m.identity_cosine >= floor),
         f"identity cosine {_number(m.identity_cosine)} (the person from {floor:.2f})"),
        ("passing", not passes(m, rule), "; ".join(failures(m, rule)) or "passes"),
        ("copy check", m.copy_suspected is True or m.expression_copied is True,
         "copied" if m.copy_suspected else "the reference photo's expression" if m.expression_copied else "no copy"),
        ("expression", judged is False,
         (f"{reading.judge} reads {reading.top}" if reading.top else "nearest its own target" if judged
          else "nearer another target" if judged is False else "not read")),
        ("judge probability", -round((reading.probability or 0.0) / PROBABILITY_STEP),
         f"{reading.judge} p({'/'.join(m.asked_classes) or '?'}) {_number(reading.probability)}"),
        ("intensity distance", round((m.blendshape_l1 if m.blendshape_l1 is not None else 1.0) / DISTANCE_STEP),
         f"blendshape L1 {_number(m.blendshape_l1)}"),
        ("identity cosine", -(m.identity_cosine or 0.0), f"identity cosine {_number(m.identity_cosine)}"),
        ("earlier candidate", choice.candidate, f"candidate {choice.candidate + 1}"),
    ]


def best_identity(choices: list[Choice]) -> float | None:
    """The highest identity cosine of a pool's candidates, copies included (measured: leaving them out let a
    stranger win where the person's only face was a copy)."""
    cosines = [c.metrics.identity_cosine for c in choices if c.metrics.identity_cosine is not None]
    return max(cosines) if cosines else None


def rank_key(choice: Choice, rule: PassRule = PassRule(), best: float | None = None) -> tuple:
    """Smaller is better: the steps of the module's docstring, in order, among a pool whose best identity cosine is
    ``best``."""
    return tuple(value for _, value, _ in _steps(choice, rule, best))


def _verdict(chosen: Choice, runner_up: Choice | None, rule: PassRule, best: float | None) -> str:
    if runner_up is None:
        return "the only candidate"
    for (name, mine, said), (_, theirs, their_said) in zip(_steps(chosen, rule, best), _steps(runner_up, rule, best)):
        if mine != theirs:
            return f"{name}: {said} vs {their_said} (candidate {runner_up.candidate + 1})"
    return "identical scores"


def mark_best(choices: list[Choice], expressions: int, rule: PassRule = PassRule()) -> list[Choice]:
    """Mark the best candidate of each expression (that has one) as chosen, with its verdict; returns the chosen,
    by expression."""
    chosen = []
    for expression in range(expressions):
        pool = [c for c in choices if c.expression == expression]
        best = best_identity(pool)
        mine = sorted(pool, key=lambda c: rank_key(c, rule, best))
        for choice in mine:
            choice.chosen, choice.verdict = False, ""
        if mine:
            mine[0].chosen = True
            mine[0].verdict = _verdict(mine[0], mine[1] if len(mine) > 1 else None, rule, best)
            chosen.append(mine[0])
    return chosen


def choose(metrics: SetMetrics, expressions: int, candidates: int, rule: PassRule = PassRule()) -> list[Choice]:
    """Every candidate, with the best of each expression marked; in the batch's order."""
    if len(metrics.images) != expressions * candidates:
        raise GenAffectInputError(f"metrics for {len(metrics.images)} images, expected {expressions * candidates}.")
    choices = [Choice(index % expressions, index // expressions, index, m) for index, m in enumerate(metrics.images)]
    mark_best(choices, expressions, rule)
    return choices
