"""Sheet jobs on engines people already run, in real ComfyUIs (CPU, tiny models): the job template is the API twin
of the example workflow; one job runs through ComfyUI's own /prompt; and two workers of ComfyUI-Distributed share
the jobs of two people x six expressions, one worker is killed mid-run, and the resume finishes the set with no face
lost and none made twice.

Needs $COMFYUI_DIR (CONTRIBUTING.md) and $COMFYUI_DISTRIBUTED, a checkout of robertvoy/ComfyUI-Distributed (copied
into the test's own custom_nodes folder, never into this repository)."""

from __future__ import annotations

import glob
import json
import os
import time

import distributed_lane as lane
import pytest
import sheet_jobs
from comfy_server import COMFYUI_DIR

pytestmark = pytest.mark.skipif(not COMFYUI_DIR or not lane.DISTRIBUTED, reason=(
    "set COMFYUI_DIR to a ComfyUI checkout and COMFYUI_DISTRIBUTED to a checkout of robertvoy/ComfyUI-Distributed "
    "(CONTRIBUTING.md)"))

PEOPLE = {"ann": 1, "bob": 2}
EXPRESSIONS = "happy, sad, surprised, angry, fearful, disgusted"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("distributed")
    lane.write_models(work / "models")
    photos = lane.write_photos(work / "people", PEOPLE)
    processes = lane.build_cluster(work, photos)
    try:
        yield work, processes
    finally:
        lane.stop(processes)


def wait(condition, timeout: float, what: str, processes) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.comfy.log()[-2500:]}" for p in processes)
            raise TimeoutError(f"{what} after {timeout} s\n{logs}")
        time.sleep(2)


def all_idle(processes) -> bool:
    return all(p.idle() for p in processes if p.alive())


def reports(process) -> list[str]:
    return glob.glob(str(process.output / "genaffect_jobs" / "**" / "*_report.json"), recursive=True)


def queue(master, files: list[str], workers: int) -> None:
    for path in files:
        with open(path, encoding="utf-8") as handle:
            status, answer = master.post("/distributed/queue", json.load(handle))
        assert status == 200 and not answer.get("node_errors"), answer
        assert answer["worker_count"] == workers, answer  # every enabled worker took its job


def test_the_job_template_is_the_api_twin_of_the_example_workflow(cluster):
    _, (master, *_) = cluster
    with open(lane.TEMPLATE, encoding="utf-8") as handle:
        template = json.load(handle)
    assert master.comfy.workflow_prompt("sheet_job_flux2_klein") == template


def test_one_job_runs_through_comfyuis_own_prompt_endpoint(cluster):
    work, (master, *_) = cluster
    out = work / "plain"
    assert sheet_jobs.main(["plan", "--people", str(work / "people"), "--expressions", "happy, sad", "--run", "plain",
                            "--engine", "prompt", "--min-identity", "-1", "--retries", "0",
                            "--template", lane.tiny_template(work / "tiny.json"), "--out", str(out)]) == 0
    files = sorted(glob.glob(str(out / "attempt-1" / "plain-ann-*.json")))
    with open(files[0], encoding="utf-8") as handle:
        result = master.comfy.run(json.load(handle)["prompt"], timeout=600)
    assert result["status"]["status_str"] == "success", result["status"]
    status = sheet_jobs.collect(sheet_jobs.read_plan(str(out)), [str(master.output)])
    ann = [f for f in status["faces"] if f["person"] == "ann"]
    assert [(f["expression"], f["state"] != "missing") for f in ann] == [("happy", True), ("sad", True)]
    saved = [o for o in result["outputs"].values() if o.get("files")]
    assert saved and saved[0]["files"][0]["filename"] == "sheet_plain-ann-01-a1_report.json"


def test_two_workers_share_the_jobs_and_a_killed_worker_is_resumed_with_nothing_lost_or_made_twice(cluster):
    work, processes = cluster
    master, _, second = processes
    out = work / "run"
    results = [str(p.output) for p in processes]
    assert sheet_jobs.main(["plan", "--people", str(work / "people"), "--expressions", EXPRESSIONS, "--per-job", "2",
                            "--run", "cast", "--engine", "distributed", "--workers", "1,2", "--delegate-master",
                            "--min-identity", "-1", "--retries", "0",
                            "--template", lane.tiny_template(work / "tiny.json"), "--out", str(out)]) == 0
    plan = sheet_jobs.read_plan(str(out))
    assert len(plan["attempts"][0]["jobs"]) == 6  # 2 people x 3 slices of 2: 3 waves of 2 jobs
    started = time.time()
    queue(master.comfy, sorted(glob.glob(str(out / "attempt-1" / "wave-*.json"))), workers=2)
    wait(lambda: reports(second), 900, "worker 2 saved no job", processes)
    second.kill()  # mid-run: its next job has started, the one after is queued
    killed_after = time.time() - started
    wait(lambda: all_idle(processes), 900, "the queues did not drain", processes)

    status = sheet_jobs.collect(plan, results)
    by_worker = {p.name: len(reports(p)) for p in processes}
    assert by_worker["worker1"] == 3 and 1 <= by_worker["worker2"] < 3, by_worker
    assert status["made_twice"] == 0 and status["counts"]["missing"] > 0, status["counts"]
    redo = {(f["person"], f["expression"]) for f in status["faces"] if f["state"] not in ("passed", "not judged")}
    print(f"killed worker 2 after {killed_after:.0f} s: {status['counts']}")

    for attempt in (2, 3):
        if not redo:
            break
        assert sheet_jobs.main(["resume", "--out", str(out), "--results", *results, "--workers", "1"]) == 0
        plan = sheet_jobs.read_plan(str(out))
        jobs = plan["attempts"][-1]["jobs"]
        asked = sorted((job["person"], expression) for job in jobs for expression in job["expressions"])
        assert asked == sorted(redo)  # exactly the faces that failed or never came back, each once
        queue(master.comfy, sorted(glob.glob(str(out / f"attempt-{attempt}" / "wave-*.json"))), workers=1)
        wait(lambda: all_idle(processes), 900, f"attempt {attempt} did not finish", processes)
        status = sheet_jobs.collect(plan, results)
        redo = {(f["person"], f["expression"]) for f in status["faces"] if f["state"] not in ("passed", "not judged")}

    counts = status["counts"]
    print(f"after the resume: {counts}; made twice: {status['made_twice']}; attempts: {len(plan['attempts'])}")
    assert counts["missing"] == 0 and status["made_twice"] == 0  # nothing lost, nothing made twice
    assert counts["passed"] == 12, sheet_jobs.summary(status)
    for face in status["faces"]:  # every face's image is where its report says
        assert os.path.isfile(face["kept"]["file"]), face
