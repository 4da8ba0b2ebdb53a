"""Guarded sampling inside a real ComfyUI, on the tiny randomly initialised FLUX and its random VAE loaded by
ComfyUI's own loaders: the Sampling Guard decodes every round with ComfyUI's VAE and scores it with Face
Metrics (tiny insightface models). A random model draws no face, so every image fails every round: the rounds
run to the budget with a new seed each, the report names them, ties go to round 1 (the unguarded run), the same
seed gives the same latents, and without a guard the samplers give exactly what they gave before."""

from __future__ import annotations

import json
import time

import torch
from genaffect.models.evaluation.sampling_guard import round_seed
from sampling_runs import CLIP, MODELS, adapter_workflow, run_ok, saved_latent, write_adapter_for_tiny_flux

SEED = 5


def guarded_graph(name: str, guard: dict | None, seed: int = SEED, rate: float = 0.5, sampler: str = "consistent",
                  images: int = 3) -> dict:
    """Tiny FLUX, one prompt, a latent batch of ``images``; the Consistent Batch Sampler (with a Sampling Guard
    when ``guard`` gives its settings) or KSampler; the latent saved as latents/guard_<name>, the report shown."""
    prompt = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": MODELS["flux"][0], "weight_dtype": "default"}},
        "clip": CLIP,
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a face", "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": images}},
    }
    if sampler == "ksampler":
        prompt["sample"] = {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    else:
        prompt["sample"] = {"class_type": "GenAffectConsistentBatchSampler", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
            "rate": rate, "anchors": 0, "start_percent": 0.0, "end_percent": 1.0, "blocks": "up"}}
        prompt["report"] = {"class_type": "PreviewAny", "inputs": {"source": ["sample", 1]}}
    if guard is not None:
        prompt.update({
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "flux_vae_random.safetensors"}},
            "analyzer": {"class_type": "GenAffectFaceAnalyzerLoader", "inputs": {
                "pack": "antelopev2", "recognition": "pack default", "provider": "CPU", "detection_size": 256,
                "detection_threshold": 0.5}},
            "photo": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
            "identity": {"class_type": "GenAffectExtractIdentity", "inputs": {
                "face_analyzer": ["analyzer", 0], "images": ["photo", 0], "face_order": "largest", "face_index": 0,
                "on_no_face": "skip"}},
            "guard": {"class_type": "GenAffectSamplingGuard", "inputs": {
                "vae": ["vae", 0], "face_analyzer": ["analyzer", 0], "identity": ["identity", 0], "candidates": 1,
                "retries": 2, "min_identity": 0.4, "max_expression_error": 1.0, **guard}},
        })
        prompt["sample"]["inputs"]["guard"] = ["guard", 0]
    prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0],
                                                             "filename_prefix": f"latents/guard_{name}"}}
    return prompt


def report_of(result: dict, node: str = "report") -> dict:
    """The guard_report shown by the PreviewAny node ``node``."""
    return json.loads(result["outputs"][node]["text"][0])


def untimed(report: dict) -> dict:
    return {**report, "rounds": [{**r, "seconds": None} for r in report["rounds"]]}


def fresh_cache(comfy) -> None:
    """Drop ComfyUI's cached outputs, so the next run samples again instead of answering from the cache."""
    status, _ = comfy.post("/free", {"unload_models": False, "free_memory": True})
    assert status == 200


def chosen_rounds(report: dict) -> list[int]:
    return [e["round"] for e in report["expressions"]]


def test_without_a_guard_the_sampler_is_unchanged_and_a_guarded_run_stops_at_the_budget(tiny_diffusion):
    comfy = tiny_diffusion
    started = time.time()
    plain_report = report_of(run_ok(comfy, guarded_graph("plain", None)))
    plain_seconds = time.time() - started
    assert plain_report == {"schema": "genaffect.guard_report", "version": 1, "guarded": False, "seed": SEED,
                            "summary": "no guard connected: the set was sampled once."}
    run_ok(comfy, guarded_graph("ksampler", None, rate=0.0, sampler="ksampler"))
    run_ok(comfy, guarded_graph("rate0", None, rate=0.0))
    assert torch.equal(saved_latent(comfy, "guard", "rate0"), saved_latent(comfy, "guard", "ksampler"))
    plain = saved_latent(comfy, "guard", "plain")

    # one round, one candidate: the unguarded run itself
    once = report_of(run_ok(comfy, guarded_graph("once", {"retries": 0, "min_identity": 0.99})))
    assert len(once["rounds"]) == 1 and torch.equal(saved_latent(comfy, "guard", "once"), plain)

    # nobody is the person at cosine 0.99 (the tiny detector finds "faces" in the noise, of no one): to the budget
    before = len(comfy.log())
    started = time.time()
    report = report_of(run_ok(comfy, guarded_graph("budget", {"retries": 2, "min_identity": 0.99})))
    guarded_seconds = time.time() - started
    seeds = [round_seed(SEED, r) for r in range(3)]
    everyone = ["image 1", "image 2", "image 3"]
    assert [(r["round"], r["seed"], r["sampled"], r["failed"]) for r in report["rounds"]] == [
        (n + 1, seeds[n], everyone, everyone) for n in range(3)]
    assert report["guarded"] and not report["all_passed"] and not report["expression_checked"]
    assert len(report["candidates"]) == 9 and not any(c["passed"] for c in report["candidates"])
    assert "3 of 3 expressions FAILED after 3 round(s)" in report["summary"]
    for label, kept in zip(everyone, report["expressions"]):  # each keeps its best-ranked (highest identity) one
        mine = [c for c in report["candidates"] if c["expression"] == label]
        best = max(mine, key=lambda c: (c["face_found"], c["identity_cosine"] or -2.0, -c["round"]))
        assert (kept["round"], kept["passed"]) == (best["round"], False) and best["chosen"]
    log = comfy.log()[before:]
    for number, seed in enumerate(seeds, start=1):
        assert f"GenAffect guard: round {number} of at most 3, 3 images" in log and f"seed {seed}" in log, log[-3000:]
    assert "FAILED after 3 round(s)" in log
    budget = saved_latent(comfy, "guard", "budget")
    for row, number in enumerate(chosen_rounds(report)):
        assert torch.equal(budget[row], plain[row]) == (number == 1)  # round 1's images are the unguarded run's
    print(f"round 1 identity cosines: {[round(c['identity_cosine'] or -2, 3) for c in report['candidates'][:3]]}; "
          f"kept from rounds {chosen_rounds(report)}")
    print(f"guarded: 3 rounds of 3 images (2 steps, decode, score) in {guarded_seconds:.1f} s; one unguarded run "
          f"{plain_seconds:.1f} s (with loading)")


def test_only_the_failures_are_re_sampled_and_the_same_seed_gives_the_same_latents(tiny_diffusion):
    comfy = tiny_diffusion
    probe = report_of(run_ok(comfy, guarded_graph("probe", {"retries": 0, "min_identity": 0.99})))
    # the random model's images hold whatever the tiny detector finds: a face or not, at random identities
    cosines = {i: c["identity_cosine"] for i, c in enumerate(probe["candidates"]) if c["identity_cosine"] is not None}
    assert cosines and len(set(cosines.values())) == len(cosines), probe["candidates"]
    top = max(cosines, key=cosines.get)
    others = sorted(c for i, c in cosines.items() if i != top)
    threshold = (others[-1] + cosines[top]) / 2 if others else cosines[top] - 0.1  # round 1: only the top passes
    settings = {"retries": 2, "min_identity": threshold}
    first = report_of(run_ok(comfy, guarded_graph("partial", settings)))
    rest = [f"image {i + 1}" for i in range(3) if i != top]
    assert first["rounds"][0]["passed"] == [f"image {top + 1}"]
    assert first["rounds"][1]["sampled"] == rest and first["rounds"][1]["seed"] == round_seed(SEED, 1)
    assert all(set(r["sampled"]) <= set(rest) for r in first["rounds"][1:])  # never the one that passed
    assert chosen_rounds(first)[top] == 1
    partial = saved_latent(comfy, "guard", "partial")
    assert torch.equal(partial[top], saved_latent(comfy, "guard", "probe")[top])
    fresh_cache(comfy)
    again = report_of(run_ok(comfy, guarded_graph("partial_again", settings)))
    assert torch.equal(saved_latent(comfy, "guard", "partial_again"), partial) and untimed(again) == untimed(first)
    print(f"partial: threshold {threshold:.3f}, rounds {[(r['sampled'], r['passed']) for r in first['rounds']]}")


def test_k_candidates_are_one_batch_and_the_same_seed_gives_the_same_latents(tiny_diffusion):
    comfy = tiny_diffusion
    settings = {"candidates": 2, "retries": 1, "min_identity": 0.99}
    first = report_of(run_ok(comfy, guarded_graph("k2_first", settings)))
    fresh_cache(comfy)
    again = report_of(run_ok(comfy, guarded_graph("k2_again", settings)))
    other = report_of(run_ok(comfy, guarded_graph("k2_other", settings, seed=SEED + 1)))
    assert [len(r["sampled"]) for r in first["rounds"]] == [3, 3] and len(first["candidates"]) == 12  # 3 x 2 x 2
    assert [c["position"] for c in first["candidates"][:6]] == list(range(6))  # round 1: one batch of 6
    a, b, c = (saved_latent(comfy, "guard", name) for name in ("k2_first", "k2_again", "k2_other"))
    assert a.shape == (3, 16, 8, 8) and torch.equal(a, b) and untimed(first) == untimed(again)
    assert (a - c).abs().max() > 1e-4 and other["rounds"][0]["seed"] == SEED + 1


def test_the_dit_sampler_with_a_guard_runs_its_rounds_and_without_one_is_unchanged(tiny_diffusion):
    comfy = tiny_diffusion
    write_adapter_for_tiny_flux(comfy)

    def dit(name: str, guard: bool) -> tuple[torch.Tensor, dict]:
        prompt = adapter_workflow(comfy)
        by_type = {node["class_type"]: key for key, node in prompt.items()}
        sampler = by_type["GenAffectDiTSampler"]
        if guard:
            prompt["guard"] = {"class_type": "GenAffectSamplingGuard", "inputs": {
                "vae": [by_type["VAELoader"], 0], "face_analyzer": [by_type["GenAffectFaceAnalyzerLoader"], 0],
                "identity": [by_type["GenAffectExtractIdentity"], 0], "candidates": 1, "retries": 1,
                "min_identity": 0.99, "max_expression_error": 1.0}}
            prompt[sampler]["inputs"]["guard"] = ["guard", 0]
        prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0],
                                                                 "filename_prefix": f"latents/guard_dit_{name}"}}
        prompt["report"] = {"class_type": "PreviewAny", "inputs": {"source": [sampler, 1]}}
        result = run_ok(comfy, prompt)
        return saved_latent(comfy, "guard", f"dit_{name}"), report_of(result)

    plain, plain_report = dit("plain", guard=False)
    guarded, report = dit("guarded", guard=True)
    assert not plain_report["guarded"] and report["guarded"]
    assert [r["sampled"] for r in report["rounds"]] == [["happy", "sad", "surprised"]] * 2  # the expressions' labels
    assert not report["all_passed"] and guarded.shape == plain.shape
    for row, number in enumerate(chosen_rounds(report)):
        assert torch.equal(guarded[row], plain[row]) == (number == 1)
