"""Guarded sampling in ComfyUI: the Sampling Guard's value (what scoring a round needs, and the budget) and the
rounds a set sampler runs with it - sample, decode with the VAE, score with Face Metrics, re-sample the
expressions whose faces fail (the rounds: ``models/evaluation/sampling_guard.py``; the pass rule:
``models/evaluation/select_best.py``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import torch

from ...models.errors import GenAffectInputError
from ...models.evaluation import face_metrics
from ...models.evaluation.guard_report import unguarded
from ...models.evaluation.sampling_guard import run_rounds
from ...models.evaluation.select_best import PassRule
from ...models.expression.batch import ExpressionBatch
from ...models.images import image_batch_to_rgb_uint8
from .. import comfy_host

log = logging.getLogger(__name__)


def unguarded_report(seed: int) -> str:
    """The guard_report output of a set sampled once, with no guard."""
    return json.dumps(unguarded(seed), indent=2)


@dataclass
class SamplingGuard:
    """What the samplers need to decode and score a round, and the budget."""

    vae: object  # ComfyUI's VAE
    analyzer: object  # GA_FACE_ANALYZER
    identity: object  # GA_IDENTITY
    target: ExpressionBatch | None
    estimator: object | None  # GA_EXPRESSION_ESTIMATOR
    held_out: object | None
    candidates: int = 1
    retries: int = 2
    min_identity: float = 0.4
    max_expression_error: float = 1.0
    reference_expression: ExpressionBatch | None = None  # the reference photo's own expression
    max_pose_error: float | None = None  # degrees (needs reference_expression's head pose); None: no limit
    expression_network: object | None = None  # GA_EXPRESSION_NETWORK: the pixel judge, reported beside the landmark judge

    def rule(self, expression_measured: bool) -> PassRule:
        return PassRule(min_identity=self.min_identity, max_expression_error=self.max_expression_error,
                        expression_measured=expression_measured,
                        max_pose_error=self.max_pose_error if expression_measured else None)


def guard_of(value) -> SamplingGuard | None:
    if value is None or isinstance(value, SamplingGuard):
        return value
    raise GenAffectInputError(f"the guard input is a {type(value).__name__}; take the guard output of GenAffect "
                              "Sampling Guard.")


def progress_text(text: str) -> None:
    """Show ``text`` on the node that is running, in ComfyUI's editor (nothing outside ComfyUI)."""
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:
        return
    context = get_executing_context()
    send = getattr(getattr(PromptServer, "instance", None), "send_progress_text", None)
    if context is not None and send is not None:
        send(text, context.node_id)


def decode(vae, samples: torch.Tensor) -> list:
    """ComfyUI's VAE Decode of a latent batch, as RGB uint8 frames."""
    images = vae.decode(samples)
    if images.ndim == 5:  # as VAE Decode does for video VAEs
        images = images.reshape(-1, *images.shape[-3:])
    return image_batch_to_rgb_uint8(images, what="the guard's decoded images")


def run_guarded(guard: SamplingGuard, sample_rows, latent: dict, images: int, seed: int,
                target: ExpressionBatch | None = None) -> tuple[dict, str]:
    """The guarded rounds for a set of ``images``: ``sample_rows(rows, seed)`` samples the set's rows ``rows``
    (a latent tensor, one row each). Returns the LATENT (the chosen candidate of each image, in order) and the
    report as JSON."""
    target = guard.target if guard.target is not None else target
    if target is not None and len(target) not in (1, images):
        raise GenAffectInputError(f"the guard's target has {len(target)} expressions for a set of {images} images; "
                                  "give one per image, or one for all.")
    if target is None and guard.estimator is not None:
        raise GenAffectInputError("the guard has an estimator but no target expression to compare with: connect "
                                  "target_expression to the Sampling Guard (what each image should show).")
    per_image = None if target is None else target if len(target) == images else target.rows([0] * images)
    measured = per_image is not None and guard.estimator is not None
    labels = list(per_image.labels) if per_image is not None and len(target) == images else \
        [f"image {i + 1}" for i in range(images)]

    def generate(number, round_seed, rows):
        samples = sample_rows(rows, round_seed)
        comfy_host.check_interrupted()
        return list(samples), decode(guard.vae, samples)

    def score(frames, rows):
        metrics = face_metrics.measure(
            guard.analyzer, guard.identity.for_rows(rows), frames, [labels[r] for r in rows],
            per_image.rows(rows) if measured else None, guard.estimator if measured else None,
            comfy_host.progress_callback(len(frames)), held_out=guard.held_out,
            reference_expression=guard.reference_expression if measured else None,
            expression_network=guard.expression_network)
        return metrics.images

    def on_round(number, rounds, round_seed, rows):
        kinds = sorted(set(rows))
        what = "the set" if number == 1 else "failing: " + ", ".join(labels[r] for r in kinds)
        text = (f"GenAffect guard: round {number} of at most {rounds}, {len(rows)} images ({what}; "
                f"{guard.candidates} candidate(s) each), seed {round_seed}")
        log.info(text)
        progress_text(text)

    outcome = run_rounds(labels, generate, score, seed=seed, candidates=guard.candidates, retries=guard.retries,
                         rule=guard.rule(measured), on_round=on_round, check_cancel=comfy_host.check_interrupted)
    out = {key: value for key, value in latent.items() if key not in ("samples", "batch_index")}
    out["samples"] = torch.stack(outcome.chosen_payloads)
    report = outcome.report()
    report["expression_checked"] = measured
    summary = "GenAffect guard: " + outcome.summary()
    (log.info if outcome.all_passed else log.warning)(summary)
    progress_text(summary)
    return out, json.dumps(report, indent=2)
