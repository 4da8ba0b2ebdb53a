"""Guarded sampling: sample, score, keep the best passing candidate of each expression, re-sample only the
failures with new seeds, stop when all pass or the budget is spent.

The thing under test is the round loop (models/sampling_guard.py), its pass rule (models/select_best.py) and
the samplers' glue (nodes/sampling/). Sampling and decoding are replaced by a painter that paints the
person or a stranger, showing one expression or another, as a fixed function of the round's seed and the
image's place in the batch; scoring is the real Face Metrics with the tiny insightface models, and the
expression is read by a landmarker double (MediaPipe's model is a user download) from a code pixel the
painter leaves in the image corner. The real samplers run in tests/integration/test_guarded_sampling.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from genaffect.models.errors import GenAffectInputError
from genaffect.models.evaluation import face_metrics, guard_report
from genaffect.models.evaluation.face_metrics import ImageMetrics
from genaffect.models.evaluation.sampling_guard import round_seed, run_rounds
from genaffect.models.evaluation.select_best import PassRule, failures, passes
from genaffect.models.expression.batch import ExpressionBatch
from genaffect.models.face.identity import extract_identity
from genaffect.nodes import comfy_host
from genaffect.nodes.guard_nodes import GenAffectSamplingGuard
from genaffect.nodes.sampling import set_sampler
from genaffect.nodes.sampling.guard import run_guarded
from tiny_insightface import faces_image

PERSON, STRANGER = 0, 5  # painted identities: the tiny recognizer scores another photo of the person ~0.8 to the
# reference photo (a pixel copy of it 1.0, which the copy check flags), strangers below 0.25
SHAPES = np.stack([np.full(52, v, np.float32) for v in (0.1, 0.5, 0.9, 0.35)])  # well separated expressions
TARGETS = ExpressionBatch(["calm", "smile", "shout"], blendshapes=SHAPES[:3])
PHOTO = 3  # the reference photo's own expression: nearer smile than any other target, nearer still to itself
RULE = PassRule(min_identity=0.4, expression_measured=True)
SEED = 1234


def paint(identity: int, shows: int) -> np.ndarray:
    """A face of ``identity`` showing expression ``shows`` (the code pixel the landmarker double reads)."""
    image = faces_image(dict(cx=128, cy=128, half=40, identity=identity, photo=1))  # a new photo, not a copy
    image[0, 0] = (0, shows, 0)
    return image


class Painter:
    """Stands in for a sampler + VAE decode: image ``position`` of the round with ``seed`` is ``script(seed,
    position, expression) -> (identity, shown expression)``, by default the person showing the asked-for one."""

    def __init__(self, script=None):
        self.script = script or (lambda seed, position, expression: (PERSON, expression))
        self.calls = []

    def __call__(self, number, seed, rows):
        self.calls.append((number, seed, list(rows)))
        drawn = [self.script(seed, position, row) for position, row in enumerate(rows)]
        return [(seed, position, who) for position, who in enumerate(drawn)], [paint(*who) for who in drawn]


@pytest.fixture
def estimator():
    from genaffect.models.expression.expression_estimator import ExpressionEstimator
    from mediapipe_results import MarkerLandmarker

    class ReadsTheCodePixel(MarkerLandmarker):
        """MediaPipe's stand-in: the painted face, with the blendshapes of the expression coded in the corner."""

        def detect(self, mp_image):
            self.scores = [SHAPES[mp_image.numpy_view()[0, 0, 1]]]
            return super().detect(mp_image)

    return ExpressionEstimator(ReadsTheCodePixel(), "face_landmarker.task")


@pytest.fixture
def identity(analyzer):
    return extract_identity(analyzer, [faces_image(dict(cx=128, cy=128, identity=PERSON))])[0]


def scorer(analyzer, identity, estimator, target=TARGETS):
    def score(images, rows):
        return face_metrics.measure(analyzer, identity, images, None, target.rows(rows), estimator).images
    return score


def rounds(painter, score, candidates=1, retries=2, seed=SEED, rule=RULE):
    return run_rounds(TARGETS.labels, painter, score, seed=seed, candidates=candidates, retries=retries, rule=rule)


def test_only_the_failures_are_re_sampled_with_new_seeds_and_the_run_stops_when_all_pass(analyzer, identity,
                                                                                           estimator):
    first = round_seed(SEED, 0)

    def script(seed, position, expression):  # round 1: "smile" is a stranger, "shout" shows a smile
        if seed == first and expression == 1:
            return STRANGER, 1
        if seed == first and expression == 2:
            return PERSON, 1
        return PERSON, expression

    painter = Painter(script)
    outcome = rounds(painter, scorer(analyzer, identity, estimator), retries=5)
    assert first == SEED  # round 1 is the unguarded run's seed
    assert painter.calls == [(1, SEED, [0, 1, 2]), (2, round_seed(SEED, 1), [1, 2])]  # then all pass: no round 3
    assert round_seed(SEED, 1) != SEED
    assert outcome.all_passed and [r.passed for r in outcome.rounds] == [[0], [1, 2]]
    assert outcome.chosen_payloads == [(SEED, 0, (PERSON, 0)), (round_seed(SEED, 1), 0, (PERSON, 1)),
                                       (round_seed(SEED, 1), 1, (PERSON, 2))]
    stranger, wrong = outcome.candidates[1], outcome.candidates[2]
    assert stranger.failures[0].startswith("not the person: identity cosine") and "below 0.40" in stranger.failures[0]
    assert wrong.failures == ["nearer another expression's target than its own"]  # judged against all 3 targets


def test_at_the_budget_the_failures_keep_their_best_ranked_candidate_and_are_reported(analyzer, identity, estimator):
    painter = Painter(lambda seed, position, expression: (STRANGER if expression == 2 else PERSON, expression))
    outcome = rounds(painter, scorer(analyzer, identity, estimator), retries=2)
    assert [call[2] for call in painter.calls] == [[0, 1, 2], [2], [2]]  # 1 + 2 retries, then the budget is spent
    assert len({call[1] for call in painter.calls}) == 3  # a new seed every round
    assert not outcome.all_passed and outcome.failed == [2]
    report = outcome.report()
    assert [r["failed"] for r in report["rounds"]] == [["shout"], ["shout"], ["shout"]]
    assert report["expressions"][2]["passed"] is False and "identity cosine" in report["expressions"][2]["failures"][0]
    assert "1 of 3 expressions FAILED after 3 round(s)" in report["summary"]
    assert len(report["candidates"]) == 5 and sum(c["chosen"] for c in report["candidates"]) == 3
    # the kept one is the best ranked of the three strangers (all fail: highest identity minus expression error)
    strangers = [c for c in outcome.candidates if c.expression == 2]
    assert outcome.chosen[2] is max(strangers, key=lambda c: c.metrics.identity_cosine - c.metrics.blendshape_l1)


def test_the_same_seed_gives_the_same_set_and_another_seed_another(analyzer, identity, estimator):
    def script(seed, position, expression):  # a fixed coin per (seed, place): the person or a stranger
        return (PERSON if np.random.default_rng([seed, position]).random() < 0.5 else STRANGER), expression

    score = scorer(analyzer, identity, estimator)
    first, again, other = Painter(script), Painter(script), Painter(script)
    a, b = rounds(first, score, retries=3), rounds(again, score, retries=3)
    rounds(other, score, retries=3, seed=7)
    assert first.calls == again.calls and len(first.calls) > 1  # it did re-sample
    def untimed(report):
        return {**report, "rounds": [{**r, "seconds": None} for r in report["rounds"]]}

    assert a.chosen_payloads == b.chosen_payloads and untimed(a.report()) == untimed(b.report())
    assert other.calls[0][1] == 7 and other.calls != first.calls


def test_with_k_candidates_the_best_passing_one_is_chosen(analyzer, identity, estimator):
    def script(seed, position, expression):  # batch: [calm, smile] x 3 candidates
        candidate = position // 2
        if expression == 0:  # a stranger, the person showing a smile, the person calm
            return [(STRANGER, 0), (PERSON, 1), (PERSON, 0)][candidate]
        return [(PERSON, 1), (PERSON, 1), (STRANGER, 1)][candidate]  # the first passing one wins the tie

    targets = TARGETS.rows([0, 1])
    painter = Painter(script)
    outcome = run_rounds(targets.labels, painter, scorer(analyzer, identity, estimator, targets), seed=SEED,
                         candidates=3, retries=2, rule=RULE)
    assert painter.calls == [(1, SEED, [0, 1, 0, 1, 0, 1])]
    assert outcome.all_passed and [(c.round, c.position) for c in outcome.chosen] == [(1, 4), (1, 1)]
    assert [c.candidate for c in outcome.chosen] == [2, 0]


def test_a_failing_candidate_that_scores_higher_loses_to_a_passing_one():
    loud = ImageMetrics(0, "a", True, identity_cosine=0.95, blendshape_l1=0.30, expression_nearest=True)
    quiet = ImageMetrics(1, "a", True, identity_cosine=0.70, blendshape_l1=0.12, expression_nearest=True)
    rule = PassRule(min_identity=0.4, max_expression_error=0.2)
    assert failures(loud, rule) == ["expression error 0.300 above 0.200"] and passes(quiet, rule)

    def score(images, rows):
        return [loud if images[0] == "first" else quiet]

    outcome = run_rounds(["a"], lambda n, seed, rows: (["first" if n == 1 else "second"],) * 2, score, seed=1,
                         retries=1, rule=rule)
    assert outcome.chosen_payloads == ["second"] and outcome.all_passed
    # without limits the first (higher scoring) wins, as Select Best ranks
    outcome = run_rounds(["a"], lambda n, seed, rows: (["first" if n == 1 else "second"],) * 2, score, seed=1,
                         retries=1)
    assert outcome.chosen_payloads == ["first"] and len(outcome.rounds) == 1
    assert failures(ImageMetrics(0, "a", True, identity_cosine=0.9), PassRule(expression_measured=True)) == [
        "expression not read (the estimator found no face)"]
    assert failures(ImageMetrics(0, "a", True, identity_cosine=0.9, expression_copied=True)) == [
        "shows the reference photo's expression instead of its target"]


def test_the_round_loop_refuses_bad_settings_and_short_rounds():
    with pytest.raises(GenAffectInputError, match="candidates per expression must be 1 or more"):
        run_rounds(["a"], None, None, seed=0, candidates=0)
    with pytest.raises(GenAffectInputError, match="round 1 asked for 2 images and got 1"):
        run_rounds(["a", "b"], lambda n, s, rows: ([1], [1]), None, seed=0)


class PaintingVAE:
    """Stands in for ComfyUI's VAE: decodes a latent whose first two values code (identity, shown expression)
    to that painted face, as an IMAGE (B, H, W, 3) in 0..1."""

    def __init__(self):
        self.decoded = 0

    def decode(self, samples):
        self.decoded += samples.shape[0]
        frames = [paint(int(latent[0, 0, 0]), int(latent[1, 0, 0])) for latent in samples]
        return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)


def test_the_samplers_glue_decodes_scores_and_returns_the_chosen_latents_and_a_report(analyzer, identity, estimator):
    guard = GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 2, 2, 0.4, 1.0, TARGETS, estimator)[0]
    sampled = []

    def sample_rows(rows, seed):  # round 1: every first candidate a stranger, "shout" shows a smile twice
        sampled.append((seed, list(rows)))
        latents = torch.zeros(len(rows), 4, 2, 2)
        for position, row in enumerate(rows):
            bad = seed == SEED and (position < 3 or row == 2)
            latents[position, 0, 0, 0] = STRANGER if bad and position < 3 else PERSON
            latents[position, 1, 0, 0] = 1 if bad and row == 2 else row
            latents[position, 2] = seed % 1000 + position  # tells the candidates apart
        return latents

    latent = {"samples": torch.zeros(1, 4, 2, 2), "batch_index": [0]}
    out, report = run_guarded(guard, sample_rows, latent, 3, SEED)
    assert sampled == [(SEED, [0, 1, 2, 0, 1, 2]), (round_seed(SEED, 1), [2, 2])]
    assert out["samples"].shape == (3, 4, 2, 2) and "batch_index" not in out
    assert out["samples"][:, 2, 0, 0].tolist() == [SEED % 1000 + 3, SEED % 1000 + 4, round_seed(SEED, 1) % 1000]
    assert guard_report.parse(report)["version"] == 1  # the versioned report, valid under its schema
    report = json.loads(report)
    assert report["guarded"] and report["expression_checked"] and report["all_passed"]
    assert [(r["round"], r["sampled"], r["failed"]) for r in report["rounds"]] == [
        (1, ["calm", "smile", "shout"], ["shout"]), (2, ["shout"], [])]
    assert guard.vae.decoded == 8


def test_without_an_estimator_the_guard_checks_identity_only_and_half_an_expression_check_is_refused(analyzer, identity):
    with pytest.raises(GenAffectInputError, match="no estimator"):
        GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 1, 0.4, 1.0, TARGETS)
    with pytest.raises(GenAffectInputError, match="needs the estimator"):
        GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 1, 0.4, 1.0, reference_expression=TARGETS)
    guard = GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 1, 0.4, 1.0)[0]

    def sample_rows(rows, seed):  # every face shows the wrong expression: not checked, so all pass
        latents = torch.zeros(len(rows), 2, 1, 1)
        latents[:, 1] = 2
        return latents

    _, report = run_guarded(guard, sample_rows, {"samples": torch.zeros(1, 2, 1, 1)}, 3, SEED, target=TARGETS)
    with_estimator = GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 1, 0.4, 1.0, None, object())[0]
    with pytest.raises(GenAffectInputError, match="no target expression"):  # the Consistent Batch Sampler has none
        run_guarded(with_estimator, sample_rows, {"samples": torch.zeros(1, 2, 1, 1)}, 3, SEED)
    report = json.loads(report)
    assert report["all_passed"] and not report["expression_checked"] and len(report["rounds"]) == 1
    assert [e["expression"] for e in report["expressions"]] == ["calm", "smile", "shout"]


def test_cancel_between_rounds_stops_the_run(analyzer, identity, estimator, monkeypatch):
    guard = GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 5, 0.4, 1.0, TARGETS, estimator)[0]
    pressed = []

    class Interrupted(Exception):
        pass

    def check_interrupted():
        if pressed:
            raise Interrupted

    monkeypatch.setattr(comfy_host, "check_interrupted", check_interrupted)
    calls = []

    def sample_rows(rows, seed):  # strangers only: it would retry 5 times
        calls.append(rows)
        pressed.append(True)  # Cancel pressed while round 1 samples
        latents = torch.zeros(len(rows), 2, 1, 1)
        latents[:, 0] = STRANGER
        return latents

    with pytest.raises(Interrupted):
        run_guarded(guard, sample_rows, {"samples": torch.zeros(1, 2, 1, 1)}, 3, SEED)
    assert len(calls) == 1


class StubbedSampling:
    """ComfyUI's sampling replaced (the sampler node's model patches and the set sampler's sample_latents): records what
    each round gets, and returns latents the PaintingVAE paints as the person showing the prompt's expression
    (prompt i is a tensor filled with i) — except in the first round, where image ``stranger`` is a stranger."""

    def __init__(self, monkeypatch, module, stranger: int = 1):
        from types import SimpleNamespace

        self.rounds, self.stranger = [], stranger
        monkeypatch.setattr(module.patching, "backbone_of", lambda model: SimpleNamespace(
            text_mask=False, distilled_guidance=False))
        monkeypatch.setattr(module.consistent_attention, "install",
                            lambda model, settings, **kwargs: {**model, "settings": settings})
        if hasattr(module, "dit_adapter"):
            monkeypatch.setattr(module.dit_adapter, "install",
                                lambda model, adapter, identity, rows, *strengths: {**model, "expressions": rows})
        monkeypatch.setattr(set_sampler, "sample_latents", self.sample_set)

    def sample_set(self, patched, latent, samples, positive, negative, seed, *settings):
        prompts = positive[0][0][:, 0, 0].long().tolist()
        settings_used = patched["settings"]
        self.rounds.append({"seed": seed, "prompts": prompts, "latents": samples[:, 0, 0, 0].long().tolist(),
                            "noise_mask": None if latent.get("noise_mask") is None else len(latent["noise_mask"]),
                            "anchors": settings_used.anchors, "sharing_seed": settings_used.seed,
                            "region": None if settings_used.region is None else settings_used.region[:, 0, 0].tolist(),
                            "expressions": patched.get("expressions")})
        out = torch.zeros(len(prompts), 4, 2, 2)
        for position, prompt in enumerate(prompts):
            out[position, 0, 0, 0] = STRANGER if len(self.rounds) == 1 and position == self.stranger else PERSON
            out[position, 1, 0, 0] = prompt
            out[position, 2] = len(self.rounds) * 10 + position
        return {"samples": out}


def test_the_consistent_batch_sampler_re_samples_a_failure_with_its_own_prompt_latent_mask_and_region(
        analyzer, identity, estimator, monkeypatch):
    from genaffect.nodes import consistent_nodes

    stub = StubbedSampling(monkeypatch, consistent_nodes)
    guard = GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 2, 0.4, 1.0, TARGETS, estimator)[0]
    prompts = [[[torch.full((1, 2, 4), float(i)), {}]] for i in range(3)]
    latent = {"samples": torch.arange(3.0).view(3, 1, 1, 1).repeat(1, 4, 2, 2), "noise_mask": torch.ones(3, 16, 16)}
    region = torch.arange(3.0).view(3, 1, 1).repeat(1, 16, 16)
    out, report = consistent_nodes.GenAffectConsistentBatchSampler().sample(
        [{}], prompts, [[[torch.zeros(1, 2, 4), {}]]], [latent], [SEED], [2], [1.0], ["euler"], ["simple"], [1.0],
        [0.5], [2], [0.0], [1.0], ["up"], region=[region], guard=[guard])
    assert stub.rounds == [
        {"seed": SEED, "prompts": [0, 1, 2], "latents": [0, 1, 2], "noise_mask": 3, "anchors": 2, "sharing_seed": SEED,
         "region": [0.0, 1.0, 2.0], "expressions": None},
        {"seed": round_seed(SEED, 1), "prompts": [1], "latents": [1], "noise_mask": 1, "anchors": 1,
         "sharing_seed": round_seed(SEED, 1), "region": [1.0], "expressions": None}]
    assert out["samples"][:, 2, 0, 0].tolist() == [10, 20, 12] and torch.equal(out["noise_mask"], latent["noise_mask"])
    assert json.loads(report)["all_passed"]


def test_the_dit_sampler_re_samples_a_failure_with_its_own_expression_row(analyzer, identity, estimator, monkeypatch):
    from genaffect.models.generation.dit_adapter import DiTAdapter, DiTAdapterConfig
    from genaffect.nodes import dit_nodes

    stub = StubbedSampling(monkeypatch, dit_nodes, stranger=2)
    adapter = DiTAdapter(DiTAdapterConfig(family="flux", hidden_size=32, double_blocks=2, single_blocks=4,
                                          token_width=32, heads=2, head_dim=8, resampler_depth=1))
    guard = GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 1, 0.4, 1.0, None, estimator)[0]
    prompts = [[[torch.full((1, 2, 4), float(i)), {}]] for i in range(3)]
    out, report = dit_nodes.GenAffectDiTSampler().sample(
        [{}], [adapter], [identity], [TARGETS], prompts, [[[torch.zeros(1, 2, 4), {}]]],
        [{"samples": torch.zeros(1, 4, 2, 2)}], [SEED], [2], [1.0], ["euler"], ["simple"], [1.0], [3.5], [1.0], [1.0],
        [0.5], [0], [0.0], [1.0], guard=[guard])
    _, rows = dit_nodes.adapter_conditions(adapter, identity, TARGETS)
    assert [r["prompts"] for r in stub.rounds] == [[0, 1, 2], [2]]
    assert torch.equal(stub.rounds[0]["expressions"], rows) and torch.equal(stub.rounds[1]["expressions"], rows[[2]])
    report = json.loads(report)  # the guard's target is the sampler's expression
    assert report["all_passed"] and [e["expression"] for e in report["expressions"]] == ["calm", "smile", "shout"]
    assert out["samples"][:, 2, 0, 0].tolist() == [10, 11, 20]
    # without a guard: one sampling of the whole set and the report says so
    stub.rounds.clear()
    plain, no_report = dit_nodes.GenAffectDiTSampler().sample(
        [{}], [adapter], [identity], [TARGETS], prompts, [[[torch.zeros(1, 2, 4), {}]]],
        [{"samples": torch.zeros(1, 4, 2, 2)}], [SEED], [2], [1.0], ["euler"], ["simple"], [1.0], [3.5], [1.0], [1.0],
        [0.5], [0], [0.0], [1.0])
    assert len(stub.rounds) == 1 and torch.equal(stub.rounds[0]["expressions"], rows)
    assert not guard_report.parse(no_report)["guarded"] and plain["samples"].shape[0] == 3
    assert json.loads(no_report)["seed"] == SEED


def test_a_face_showing_the_reference_photos_expression_fails_and_is_re_sampled(analyzer, identity):
    """Real landmarks (golden readings of a person the judge never trained on): the judge reads each face relative
    to the person's neutral photo; a face that kept the photo's expression fails and is sampled again."""
    from genaffect.models.expression.expression_estimator import ExpressionEstimator, estimate_expressions
    from genaffect.models.expression.expression_library import presets
    from judge_readings import golden, square_shape
    from mediapipe_results import MarkerLandmarker

    readings = golden()
    row = int(np.flatnonzero(readings["reference"] >= 0)[0])
    person, neutral = readings["person"][row], int(readings["reference"][row])
    right = {str(readings["labels"][i]): int(i) for i in np.flatnonzero(readings["person"] == person) if i != neutral
             and readings["classes"][int(np.argmax(readings["relative"][i]))] == readings["labels"][i]}
    shown = sorted(right)[:2]
    codes = [right[shown[0]], right[shown[1]], neutral]  # the code pixel's value -> the golden reading shown

    class ReadsTheCodePixel(MarkerLandmarker):
        def detect(self, mp_image):
            self.shapes = [square_shape(readings, codes[mp_image.numpy_view()[0, 0, 1]])]
            return super().detect(mp_image)

    estimator = ExpressionEstimator(ReadsTheCodePixel(), "face_landmarker.task")
    photo = estimate_expressions(estimator, [paint(PERSON, 2)]).expression  # the reference photo: neutral
    guard = GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 2, 0.4, 1.0, presets(shown),
                                           estimator, reference_expression=photo)[0]

    def sample_rows(rows, seed):  # round 1: the second expression keeps the photo's neutral face
        latents = torch.zeros(len(rows), 2, 1, 1)
        latents[:, 1, 0, 0] = torch.tensor([2 if seed == SEED and row == 1 else row for row in rows])
        return latents

    _, report = run_guarded(guard, sample_rows, {"samples": torch.zeros(1, 2, 1, 1)}, 2, SEED)
    report = json.loads(report)
    kept = report["candidates"][1]
    assert kept["judge_top"] == "neutral" and kept["expression_copied"] is True
    assert "shows the reference photo's expression instead of its target (landmark judge, relative to the reference " \
           "photo reads neutral)" in kept["failures"]  # (the same face shape as the photo: a copy check may flag it too)
    assert [(r["sampled"], r["passed"]) for r in report["rounds"]] == [(shown, shown[:1]), (shown[1:], shown[1:])]
    assert report["expressions"][1]["verdict"].startswith("passing: passes vs")  # it passed, the kept-photo face did not


def test_the_guards_pose_tolerance_needs_the_photos_pose_and_the_targets_and_goes_into_its_pass_rule(analyzer, identity,
                                                                                                    estimator):
    with pytest.raises(GenAffectInputError, match="max_pose_error compares each face's head pose"):
        GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 1, 0.4, 1.0, TARGETS, estimator,
                                       max_pose_error=5.0)
    photo = ExpressionBatch(["photo"], blendshapes=np.zeros((1, 52), np.float32),
                            head_pose=np.zeros((1, 3), np.float32))
    guard = GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 1, 0.4, 1.0, TARGETS, estimator,
                                           reference_expression=photo, max_pose_error=5.0)[0]
    assert guard.rule(True).max_pose_error == 5.0
    assert guard.rule(False).max_pose_error is None  # nothing measured the faces: no pose to hold them to
    unlimited = GenAffectSamplingGuard().build(PaintingVAE(), analyzer, identity, 1, 1, 0.4, 1.0, TARGETS, estimator)[0]
    assert unlimited.rule(True).max_pose_error is None
