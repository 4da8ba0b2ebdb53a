"""Guarded sampling: sample a set, score every image against its own target, keep the best passing candidate
of each expression, and re-sample only the expressions that have none, with new seeds, until all pass or the
retries are spent (issue: users want the sheet to come out right, not only a report).

The loop knows nothing of ComfyUI: ``generate`` samples and decodes, ``score`` measures (Face Metrics), and
whether a candidate passes and which candidate is best are Select Best's rule (``models/select_best.py``).

- Round 1 samples the whole set, K candidates per expression when K > 1 (``[expression 1..N] x K`` in one
  batch), with the user's seed: with K = 1 it is exactly the unguarded run.
- Round r > 1 samples K candidates of each expression that has no passing candidate yet, as a batch of its
  own, with :func:`round_seed` (the seed and the round number, so the same seed gives the same set).
- After every round each expression keeps its best candidate so far (passing first); the run stops when
  every expression has a passing one or after ``1 + retries`` rounds. Expressions that never passed keep
  their best-ranked candidate and are reported as failed.

Expression accuracy asks whether a face is nearer its own target than every *other target of the set*, so
a round that re-samples only some expressions is scored together with one kept image of each other
expression (their scores are not used): every target of the set takes part.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from ..errors import GenAffectInputError
from .face_metrics import ImageMetrics
from .guard_report import stamped
from .select_best import Choice, PassRule, failures, mark_best

MASK64 = (1 << 64) - 1


def round_seed(seed: int, round_index: int) -> int:
    """The seed of round ``round_index`` (0 = the first round, which takes ``seed`` itself): SplitMix64 of the
    seed and the round, so rounds never reuse a seed by accident and the same seed gives the same rounds."""
    if round_index == 0:
        return seed
    z = (seed + round_index * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


@dataclass
class Candidate(Choice):
    """One sampled image. ``candidate`` counts this expression's candidates in sampling order (ties go to the
    earlier one); ``index`` counts all candidates of the run."""

    round: int = 1
    seed: int = 0  # the seed of its round
    position: int = 0  # in its round's batch
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class Round:
    number: int  # 1-based
    seed: int
    sampled: list[int]  # the expressions sampled (K candidates each)
    passed: list[int]  # of those, the ones that have a passing candidate after this round
    seconds: float = 0.0


@dataclass
class GuardOutcome:
    labels: list[str]
    rule: PassRule
    candidates_per_expression: int
    retries: int
    candidates: list[Candidate]
    rounds: list[Round]
    chosen: list[Candidate]  # one per expression, in order
    chosen_payloads: list  # what ``generate`` returned for the chosen candidates, in order

    @property
    def failed(self) -> list[int]:
        return [c.expression for c in self.chosen if not c.passed]

    @property
    def all_passed(self) -> bool:
        return not self.failed

    def _entry(self, candidate: Candidate) -> dict:
        """One candidate in the report: where it came from, whether it passed and why not, its scores."""
        c = candidate
        return {"expression": self.labels[c.expression], "round": c.round, "seed": c.seed, "position": c.position,
                "passed": c.passed, "chosen": c.chosen, "verdict": c.verdict, "failures": c.failures,
                **{k: v for k, v in asdict(c.metrics).items() if k not in ("index", "label")}}

    def report(self) -> dict:
        """The rounds and every candidate, as the versioned guard report (``guard_report.py``)."""
        label = self.labels.__getitem__
        return stamped({
            "guarded": True,
            "seed": self.rounds[0].seed,
            "all_passed": self.all_passed,
            "summary": self.summary(),
            "rule": asdict(self.rule),
            "candidates_per_expression": self.candidates_per_expression,
            "retries": self.retries,
            "rounds": [{"round": r.number, "seed": r.seed, "sampled": [label(e) for e in r.sampled],
                        "passed": [label(e) for e in r.passed],
                        "failed": [label(e) for e in r.sampled if e not in r.passed],
                        "seconds": round(r.seconds, 3)} for r in self.rounds],
            "expressions": [self._entry(c) for c in self.chosen],  # the kept candidate of each, in order
            "candidates": [self._entry(c) for c in self.candidates],
        })

    def summary(self) -> str:
        count, rounds = len(self.labels), len(self.rounds)
        per_round = "; ".join(f"round {r.number}: {len(r.passed)} of {len(r.sampled)} passed" for r in self.rounds)
        if self.all_passed:
            return f"all {count} expressions passed after {rounds} round(s) ({per_round})."
        failed = ", ".join(f"{self.labels[c.expression]} ({'; '.join(c.failures)})"
                           for c in self.chosen if not c.passed)
        return (f"{len(self.failed)} of {count} expressions FAILED after {rounds} round(s), the retry budget "
                f"({per_round}); their best-ranked candidate is kept: {failed}.")


def run_rounds(labels: list[str], generate, score, *, seed: int, candidates: int = 1, retries: int = 0,
               rule: PassRule = PassRule(), on_round=None, check_cancel=None) -> GuardOutcome:
    """Sample, score, keep the best, re-sample the failures; see the module's docstring.

    ``generate(round_number, seed, rows)`` samples one image per entry of ``rows`` (expression indices) and
    returns ``(payloads, images_rgb)`` in that order; ``score(images_rgb, rows)`` returns one
    :class:`ImageMetrics` per image, measured against the target of its row; ``on_round(round_number, rounds,
    seed, rows)`` is told before each round samples; ``check_cancel()`` raises to stop between rounds."""
    expressions = len(labels)
    if expressions < 1:
        raise GenAffectInputError("guarded sampling needs at least one expression.")
    if candidates < 1 or retries < 0:
        raise GenAffectInputError(f"candidates per expression must be 1 or more (got {candidates}) and retries 0 or "
                                  f"more (got {retries}).")
    every: list[Candidate] = []
    payloads: list = []
    images: list = []
    rounds: list[Round] = []
    chosen: dict[int, Candidate] = {}
    pending = list(range(expressions))
    for round_index in range(1 + retries):
        if check_cancel is not None:
            check_cancel()
        number, seed_now = round_index + 1, round_seed(seed, round_index)
        rows = [e for _ in range(candidates) for e in pending]
        if on_round is not None:
            on_round(number, 1 + retries, seed_now, rows)
        started = time.perf_counter()
        new_payloads, new_images = generate(number, seed_now, rows)
        if len(new_payloads) != len(rows) or len(new_images) != len(rows):
            raise GenAffectInputError(f"round {number} asked for {len(rows)} images and got {len(new_images)}.")
        fillers = [e for e in range(expressions) if e not in pending]  # every target of the set takes part
        metrics = score(list(new_images) + [images[chosen[e].index] for e in fillers], rows + fillers)
        if len(metrics) != len(rows) + len(fillers):
            raise GenAffectInputError(f"the scorer measured {len(metrics)} images of {len(rows) + len(fillers)}.")
        for position, (row, measured) in enumerate(zip(rows, metrics)):
            if not isinstance(measured, ImageMetrics):
                raise GenAffectInputError("the scorer must return Face Metrics' ImageMetrics.")
            order = sum(c.expression == row for c in every)
            every.append(Candidate(row, order, len(every), measured, round=number, seed=seed_now, position=position,
                                   failures=failures(measured, rule)))
        payloads.extend(new_payloads)
        images.extend(new_images)
        chosen = {c.expression: c for c in mark_best(every, expressions, rule)}
        sampled = pending
        pending = [e for e in pending if not chosen[e].passed]
        rounds.append(Round(number, seed_now, sampled, [e for e in sampled if e not in pending],
                            time.perf_counter() - started))
        if not pending:
            break
    best = [chosen[e] for e in range(expressions)]
    return GuardOutcome(list(labels), rule, candidates, retries, every, rounds, best,
                        [payloads[c.index] for c in best])
