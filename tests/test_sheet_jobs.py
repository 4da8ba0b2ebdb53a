"""Sheet jobs for many people x expressions: the job files each engine takes (golden), the guard report saved with a
job's faces (golden, and valid under its JSON Schema, as the reference validator reads it too), and the resume that
writes jobs for exactly the faces that failed or never came back - never one that passed.

The reports here are made by the real guard loop (models/evaluation/sampling_guard.run_rounds) and saved by the real
node; only the sampler is a stand-in (a face is found, or not, by script). Two real ComfyUI workers with
ComfyUI-Distributed run the jobs in tests/integration/test_sheet_jobs_distributed.py."""

from __future__ import annotations

import base64
import copy
import json
import os

import numpy as np
import pytest
import torch
from genaffect.models.errors import GenAffectInputError
from genaffect.models.evaluation.face_metrics import ImageMetrics
from genaffect.models.evaluation.guard_report import SCHEMA_FILE, SheetJob, find_reports, parse, save_job
from genaffect.models.evaluation.sampling_guard import run_rounds
from genaffect.models.evaluation.select_best import PassRule
from genaffect.models.files.json_check import errors, load_schema
from genaffect.nodes.job_nodes import GenAffectSaveSheetJob, GenAffectSheetJob
import sheet_jobs
from PIL import Image
from tiny_insightface import faces_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLDEN = os.path.join(REPO, "tests", "data", "sheet_jobs")
REWRITE = os.environ.get("GENAFFECT_WRITE_GOLDEN") == "1"  # set it to write the golden files anew, then read the diff
EXPRESSIONS = ["happy", "sad", "surprised", "angry", "fearful"]


def golden(name: str, value) -> None:
    path = os.path.join(GOLDEN, name)
    text = json.dumps(value, indent=1, sort_keys=True) + "\n"
    if REWRITE:
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    with open(path, encoding="utf-8") as handle:
        assert json.loads(handle.read()) == json.loads(text), f"{name} changed; GENAFFECT_WRITE_GOLDEN=1 rewrites it"


def guard_report(labels: list[str], found: dict[tuple[int, int], bool], seed: int, retries: int = 1) -> dict:
    """The report of the real guard loop on a stand-in sampler: face ``found[(round, expression)]`` (default
    found), identity cosine fixed by the round and place, so a missing face fails and is re-sampled."""
    def generate(number, round_seed, rows):
        return [None] * len(rows), [(number, row) for row in rows]

    def score(images, rows):
        return [ImageMetrics(i, "", found.get(image, True), identity_cosine=0.5 + image[1] / 100 - image[0] / 1000,
                             note="" if found.get(image, True) else "no face in the image")
                for i, image in enumerate(images)]

    outcome = run_rounds(labels, generate, score, seed=seed, retries=retries, rule=PassRule(min_identity=0.4))
    return {**outcome.report(), "expression_checked": False}


def frames(count: int) -> list[np.ndarray]:
    return [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(count)]


def untimed(report: dict) -> dict:
    return {**report, "rounds": [{**r, "seconds": 0.0} for r in report["rounds"]]}


@pytest.fixture
def people(tmp_path):
    folder = tmp_path / "people"
    folder.mkdir()
    for name, identity in (("ann", 1), ("bob", 2)):
        Image.fromarray(faces_image(dict(cx=128, cy=128, identity=identity))).save(folder / f"{name}.png")
    return folder


def test_the_saved_report_matches_the_golden_file_and_its_json_schema(tmp_path, people):
    jsonschema = pytest.importorskip("jsonschema")
    job = SheetJob("cast-ann-01-a1", "ann", "ann.png", ("happy", "sad", "surprised"), 11)
    report = guard_report(["happy", "sad", "surprised"], {(1, 1): False}, seed=11)  # sad: no face in round 1
    saved, name = save_job(str(tmp_path / "out"), "sheet", job, frames(3), report, str(people / "ann.png"))
    assert name == "sheet_cast-ann-01-a1_report.json"
    assert sorted(os.listdir(tmp_path / "out")) == [
        "sheet_cast-ann-01-a1_01_happy.png", "sheet_cast-ann-01-a1_02_sad.png", "sheet_cast-ann-01-a1_03_surprised.png",
        "sheet_cast-ann-01-a1_reference.png", "sheet_cast-ann-01-a1_report.json"]
    with open(tmp_path / "out" / name, encoding="utf-8") as handle:
        on_disk = json.load(handle)
    assert on_disk == saved
    golden("saved_report.json", untimed(saved))
    faces = saved["expressions"]
    assert [(f["expression"], f["index"], f["round"], f["passed"]) for f in faces] == [
        ("happy", 0, 1, True), ("sad", 1, 2, True), ("surprised", 2, 1, True)]  # sad re-sampled in round 2
    assert [c["failures"] for c in saved["candidates"] if not c["passed"]] == [["no face in the image"]]
    assert (tmp_path / "out" / saved["job"]["reference"]).read_bytes() == (people / "ann.png").read_bytes()
    jsonschema.Draft202012Validator.check_schema(load_schema(SCHEMA_FILE))
    jsonschema.validate(on_disk, load_schema(SCHEMA_FILE))  # the reference validator reads the schema as we do


BROKEN = {  # a change to a valid saved report -> words the refusal names
    "version 2": (lambda r: r.update(version=2), "version 2"),
    "no job expressions": (lambda r: r["job"].update(expressions=[]), "job.expressions has 0 entries"),
    "a job id with a slash": (lambda r: r["job"].update(id="a/b"), "job.id"),
    "passed as text": (lambda r: r["expressions"][1].update(passed="yes"), "expressions[1].passed"),
    "a face without its file": (lambda r: r["expressions"][0].pop("file"), "expressions[0] has no 'file'"),
    "a round of 0": (lambda r: r["candidates"][1].update(round=0), "candidates[1].round"),
    "guarded with no rounds": (lambda r: r.pop("rounds"), "has no 'rounds'"),
    "an unknown job field": (lambda r: r["job"].update(owner="x"), "job.owner is not a known field"),
}


@pytest.mark.parametrize("change", list(BROKEN))
def test_a_malformed_report_is_refused_naming_the_place(change, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    job = SheetJob("j1", "ann", "ann.png", ("happy", "sad"), 3)
    saved, _ = save_job(str(tmp_path), "", job, frames(2), guard_report(["happy", "sad"], {}, 3))
    broken = copy.deepcopy(saved)
    edit, words = BROKEN[change]
    edit(broken)
    with pytest.raises(GenAffectInputError, match="guard.report") as refused:
        parse(json.dumps(broken), "the report")
    assert words in str(refused.value)
    assert not jsonschema.Draft202012Validator(load_schema(SCHEMA_FILE)).is_valid(broken)  # the reference agrees
    assert errors(saved, load_schema(SCHEMA_FILE)) == []


def test_a_report_that_names_other_expressions_than_its_job_is_refused(tmp_path):
    job = SheetJob("j1", "ann", "ann.png", ("happy", "sad"), 3)
    with pytest.raises(GenAffectInputError, match="connect the job's expressions"):
        save_job(str(tmp_path), "", job, frames(2), guard_report(["angry", "sad"], {}, 3))
    with pytest.raises(GenAffectInputError, match="2 images for 3 expressions|3 images for 2"):
        save_job(str(tmp_path), "", job, frames(3), guard_report(["happy", "sad"], {}, 3))
    assert os.listdir(tmp_path) == []  # refused before anything was written


def test_the_job_node_reads_the_photo_only_inside_the_input_folder(tmp_path, monkeypatch):
    for folder in ("input", "output"):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(f"GENAFFECT_{folder.upper()}_DIR", str(tmp_path / folder))
    Image.fromarray(faces_image(dict(cx=128, cy=128))).save(tmp_path / "input" / "ann.png")
    Image.fromarray(faces_image(dict(cx=128, cy=128))).save(tmp_path / "outside.png")
    node = GenAffectSheetJob()
    photo, expressions, seed, job = node.load("j-1", "Ann", "ann.png", "happy;\nsad", 9)
    assert photo.shape == (1, 256, 256, 3) and expressions == "happy, sad" and seed == 9
    assert job == SheetJob("j-1", "Ann", "ann.png", ("happy", "sad"), 9)
    full = str(tmp_path / "input" / "ann.png")  # what an API wrapper passes after storing a downloaded photo
    assert GenAffectSheetJob.VALIDATE_INPUTS(full) is True and GenAffectSheetJob.VALIDATE_INPUTS(None) is True
    for outside in ("../outside.png", str(tmp_path / "outside.png"), "missing.png"):
        assert "not in ComfyUI's input folder" in GenAffectSheetJob.VALIDATE_INPUTS(outside)
        with pytest.raises(GenAffectInputError, match="not in ComfyUI's input folder"):
            node.load("j-1", "Ann", outside, "happy", 9)
    for bad, words in (("a b", "job id"), ("../x", "job id")):
        with pytest.raises(GenAffectInputError, match=words):
            node.load(bad, "Ann", "ann.png", "happy", 9)
    with pytest.raises(GenAffectInputError, match="appear"):
        node.load("j-1", "Ann", "ann.png", "happy, happy", 9)
    (tmp_path / "input" / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n not the rest")
    with pytest.raises(GenAffectInputError, match=r"job's photo cannot be used: .*damaged.png is not a readable image"
                                                  r".*replace it with a PNG or JPEG photo"):
        node.load("j-1", "Ann", "damaged.png", "happy", 9)

    save = GenAffectSaveSheetJob()
    images = torch.rand(2, 16, 16, 3)
    shown = save.save(images, job, json.dumps(guard_report(["image 1", "image 2"], {}, 9)), "jobs/run/sheet")
    report = json.loads(shown["result"][1])
    assert [f["expression"] for f in report["candidates"]] == ["happy", "sad"]  # numbered images get the job's names
    assert report["rounds"][0]["sampled"] == ["happy", "sad"]
    assert [i["filename"] for i in shown["ui"]["images"]] == ["sheet_j-1_01_happy.png", "sheet_j-1_02_sad.png"]
    assert {i["subfolder"] for i in shown["ui"]["images"] + shown["ui"]["files"]} == {"jobs/run"}
    assert shown["result"][0] is images
    with pytest.raises(GenAffectInputError, match="outside ComfyUI's output folder"):
        save.save(images, job, json.dumps(guard_report(["happy", "sad"], {}, 9)), "../escape/sheet")


def plan(out, people, *extra) -> dict:
    arguments = ["plan", "--people", str(people), "--expressions", ", ".join(EXPRESSIONS), "--per-job", "2",
                 "--seed", "5", "--run", "cast", "--out", str(out), *extra]
    assert sheet_jobs.main(arguments) == 0
    return sheet_jobs.read_plan(str(out))


def job_files(out, attempt: int) -> dict:
    folder = os.path.join(out, f"attempt-{attempt}")
    files = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            files[name] = json.load(handle)
    return files


@pytest.mark.parametrize("engine, extra", [
    ("prompt", ["--photo-folder", "cast"]),
    ("comfyui-api", ["--photo-url", "https://example.org/photos/", "--request",
                     '{"s3": {"bucket": "sheets", "prefix": "cast/", "async": true}}']),
    ("distributed", ["--workers", "1,2", "--delegate-master"]),
    ("distributed_with_master", ["--workers", "7", "--retries", "1", "--min-identity", "0.5"]),
], ids=lambda value: value if isinstance(value, str) else None)
def test_job_files_match_the_golden_files(tmp_path, people, engine, extra):
    written = plan(tmp_path / "run", people, "--engine", engine.removesuffix("_with_master"), *extra)
    jobs = written["attempts"][0]["jobs"]
    assert [(j["person"], j["expressions"]) for j in jobs] == [
        (person, part) for person in ("ann", "bob") for part in (["happy", "sad"], ["surprised", "angry"], ["fearful"])]
    assert len({j["seed"] for j in jobs}) == len(jobs) and all(0 <= j["seed"] < 2 ** 53 for j in jobs)
    with open(sheet_jobs.TEMPLATE, encoding="utf-8") as handle:
        template = json.load(handle)
    changed = {}
    for name, body in job_files(tmp_path / "run", 1).items():
        assert set(template) <= set(body["prompt"])  # the template's nodes all there; the golden holds what changed
        changed[name] = {**body, "prompt": {key: node for key, node in body["prompt"].items()
                                            if template.get(key) != node}}
    golden(f"jobs_{engine}.json", changed)


def test_distributed_waves_give_every_job_to_one_participant_and_a_short_wave_enables_fewer_workers(tmp_path, people):
    plan(tmp_path / "run", people, "--engine", "distributed", "--workers", "1,2", "--delegate-master")
    waves = list(job_files(tmp_path / "run", 1).values())
    assert [w["enabled_worker_ids"] for w in waves] == [["1", "2"], ["1", "2"], ["1", "2"]]
    given = []
    for wave in waves:
        values = {k: n["inputs"] for k, n in wave["prompt"].items() if n["class_type"] == "DistributedValue"}
        assert set(values) == {f"job_{name}" for name in sheet_jobs.JOB_INPUTS}
        assert all(v["default_value"] == "" for v in values.values())  # the master makes no job
        ids = json.loads(values["job_job"]["worker_values"])
        given += [ids[k] for k in sorted(ids) if k != "_type"]
        collector = [n for n in wave["prompt"].values() if n["class_type"] == "DistributedCollector"]
        assert len(collector) == 1 and wave["prompt"][collector[0]["inputs"]["images"][0]]["class_type"] == \
            "GenAffectSaveSheetJob"
    assert given == [j["id"] for j in sheet_jobs.read_plan(str(tmp_path / "run"))["attempts"][0]["jobs"]]

    plan(tmp_path / "three", people, "--engine", "distributed", "--workers", "1,2,3,4", "--delegate-master")
    short = list(job_files(tmp_path / "three", 1).values())
    assert [w["enabled_worker_ids"] for w in short] == [["1", "2", "3", "4"], ["1", "2"]]  # 6 jobs: 4 + 2


def test_a_comfyui_api_job_carries_its_photo_inline_and_a_prefix_at_the_top_of_the_output_folder(tmp_path, people):
    plan(tmp_path / "run", people, "--engine", "comfyui-api")
    body = job_files(tmp_path / "run", 1)["cast-ann-01-a1.json"]
    job = next(n for n in body["prompt"].values() if n["class_type"] == "GenAffectSheetJob")
    assert base64.b64decode(job["inputs"]["image"]) == (people / "ann.png").read_bytes()
    save = next(n for n in body["prompt"].values() if n["class_type"] == "GenAffectSaveSheetJob")
    assert body["id"] == "cast-ann-01-a1" and save["inputs"]["filename_prefix"] == "sheet"
    assert sheet_jobs.main(["plan", "--people", str(people), "--expressions", "happy", "--engine", "comfyui-api",
                            "--prefix", "a/b", "--out", str(tmp_path / "other")]) == 2
    assert sheet_jobs.main(["plan", "--people", str(people), "--expressions", "happy", "--engine", "comfyui-api",
                            "--request", '{"id": "x"}', "--out", str(tmp_path / "other")]) == 2


def run_jobs(results, jobs: list[dict], outcome) -> None:
    """Save each job's results as a worker would: ``outcome(job) -> None`` (never came back), "killed" (its
    images written, not its report) or {expression: found in round 1} (retries 0: not found = failed)."""
    for job in jobs:
        result = outcome(job)
        if result is None:
            continue
        sheet = SheetJob(job["id"], job["person"], os.path.basename(job["photo"]), tuple(job["expressions"]),
                         job["seed"])
        if result == "killed":
            for index, label in enumerate(job["expressions"]):
                Image.fromarray(frames(1)[0]).save(results / f"sheet_{job['id']}_{index + 1:02d}_{label}.png")
            continue
        found = {(1, i): result.get(label, True) for i, label in enumerate(job["expressions"])}
        report = guard_report(list(job["expressions"]), found, job["seed"], retries=0)
        save_job(str(results), "sheet", sheet, frames(len(job["expressions"])), report, job["photo"])


def test_resume_writes_jobs_for_exactly_the_faces_that_failed_or_never_came_back(tmp_path, people):
    out, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    first = plan(out, people)["attempts"][0]["jobs"]
    outcomes = {"cast-ann-01-a1": {"sad": False},  # sad failed the guard
                "cast-ann-02-a1": None,  # never came back (its worker was killed before it started)
                "cast-bob-01-a1": "killed",  # killed while saving: images but no report
                "cast-bob-03-a1": {"fearful": False}}
    run_jobs(results, first, lambda job: outcomes.get(job["id"], {}))
    (results / "sheet_stray_report.json").write_text("{not json")  # a damaged file is reported, not fatal

    assert sheet_jobs.main(["resume", "--out", str(out), "--results", str(results)]) == 0
    status = json.loads((out / "status.json").read_text())
    states = {(f["person"], f["expression"]): f["state"] for f in status["faces"]}
    redo = {("ann", "sad"), ("ann", "surprised"), ("ann", "angry"), ("bob", "happy"), ("bob", "sad"),
            ("bob", "fearful")}
    assert {face for face, state in states.items() if state != "passed"} == redo
    assert states[("ann", "sad")] == "failed" and states[("bob", "happy")] == "missing"
    assert status["made_twice"] == 0 and len(status["unusable"]) == 1 and "sheet_stray_report.json" in \
        status["unusable"][0]
    second = sheet_jobs.read_plan(str(out))["attempts"][1]["jobs"]
    asked = [(j["person"], e) for j in second for e in j["expressions"]]
    assert sorted(asked) == sorted(redo) and len(asked) == len(set(asked))  # each once, no passed face
    assert [(j["person"], j["expressions"]) for j in second] == [
        ("ann", ["sad", "surprised"]), ("ann", ["angry"]), ("bob", ["happy", "sad"]), ("bob", ["fearful"])]
    assert not {j["seed"] for j in second} & {j["seed"] for j in first}  # a retried face gets a new seed
    assert sorted(job_files(out, 2)) == sorted(f"{j['id']}.json" for j in second)

    run_jobs(results, second, lambda job: {"fearful": False} if job["person"] == "bob" else {})
    assert sheet_jobs.main(["resume", "--out", str(out), "--results", str(results), "--max-attempts", "2"]) == 0
    status = json.loads((out / "status.json").read_text())
    assert status["counts"] == {"passed": 9, "not judged": 0, "failed": 1, "missing": 0}
    assert status["made_twice"] == 0
    assert len(sheet_jobs.read_plan(str(out))["attempts"]) == 2  # bob/fearful given up after 2 tries: no attempt 3
    kept = {(f["person"], f["expression"]): f["kept"]["job"] for f in status["faces"] if f["kept"]}
    assert kept[("ann", "happy")] == "cast-ann-01-a1" and kept[("ann", "sad")] == "cast-ann-01-a2"


def test_a_face_made_twice_is_counted_and_reports_of_other_runs_are_left_alone(tmp_path, people):
    out, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    jobs = plan(out, people)["attempts"][0]["jobs"]
    run_jobs(results, jobs, lambda job: {})
    again = dict(jobs[0], id="cast-ann-01-a9")  # e.g. a job re-queued by hand while the first still ran
    plan_file = sheet_jobs.read_plan(str(out))
    plan_file["attempts"].append({"attempt": 2, "jobs": [again], "files": []})
    sheet_jobs.save_json(str(out / "plan.json"), plan_file)
    run_jobs(results, [again], lambda job: {})
    other = SheetJob("other-run-1", "ann", "ann.png", ("happy",), 1)
    save_job(str(results), "sheet", other, frames(1), guard_report(["happy"], {}, 1))
    status = sheet_jobs.collect(sheet_jobs.read_plan(str(out)), [str(results)])
    assert status["made_twice"] == 2 and status["other_runs"] == 1
    assert status["counts"]["passed"] == 10 and status["counts"]["missing"] == 0
    reports, unusable = find_reports([str(results)])
    assert len(reports) == 8 and not unusable


def test_plans_that_cannot_run_are_refused_with_the_reason(tmp_path, people, capsys):
    def refused(*arguments) -> str:
        assert sheet_jobs.main(["plan", "--people", str(people), "--out", str(tmp_path / "x"), *arguments]) == 2
        return capsys.readouterr().err

    assert "twice" in refused("--expressions", "happy, sad, happy")
    assert "--workers" in refused("--expressions", "happy", "--workers", "1")
    assert "needs --workers" in refused("--expressions", "happy", "--engine", "distributed")
    assert "--run" in refused("--expressions", "happy", "--run", "a b")
    template = tmp_path / "ui.json"
    template.write_text(json.dumps({"nodes": [], "links": []}))
    assert "API format" in refused("--expressions", "happy", "--template", str(template))
