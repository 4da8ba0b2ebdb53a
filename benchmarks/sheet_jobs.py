"""Sheet-job throughput with one worker against two, on ComfyUI-Distributed, measured in one run.

    COMFYUI_DIR=... COMFYUI_PYTHON=... COMFYUI_DISTRIBUTED=... python benchmarks/sheet_jobs.py [--jobs 4] [--repeats 2]

A master (delegating) and two workers, each a real ComfyUI on one CPU thread (two workers, two cores: as two GPUs
would be two GPUs), run the lane's sheet job (tests/integration/distributed_lane.py: the FLUX.2 [klein] sheet job
on tiny random models, 2 expressions a job, guarded) written by tools/sheet_jobs.py. After one wave that loads the
models on both workers, the same number of jobs runs on worker 1 alone and on both, alternating (1, 2, 2, 1, ...),
each timed from the first request to the last report, with the CPU time the workers used meanwhile (CPU seconds per
second: the cores the run kept busy - on a machine shared with other work, the time ratio says as much about the
others as about the workers). Prints faces per minute, the ratio of the sums of times and the cores used, and writes
benchmarks/results/sheet_jobs.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for folder in ("tests/integration", "tests/support", "tools"):
    sys.path.insert(0, os.path.join(REPO, folder))
from face_analysis import save_result  # noqa: E402

EXPRESSIONS = ["happy", "sad", "surprised", "angry", "fearful", "disgusted", "contempt", "worried"]


def cpu_seconds(processes) -> float:
    """User and system CPU time of the processes so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for process in processes:
        with open(f"/proc/{process.popen.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def run_jobs(lane, sheet_jobs, work: Path, processes, name: str, workers: list[str], jobs: int) -> tuple[float, float]:
    """Seconds for ``jobs`` jobs of 2 expressions on ``workers``, from the first request to the last report, and the
    workers' CPU seconds meanwhile."""
    out = work / name
    per_person = len(EXPRESSIONS) // 2
    people = sorted(os.path.splitext(p)[0] for p in os.listdir(work / "people"))
    assert jobs <= per_person * len(people)
    expressions = ", ".join(EXPRESSIONS[:2 * -(-jobs // len(people))])
    assert sheet_jobs.main(["plan", "--people", str(work / "people"), "--expressions", expressions, "--per-job", "2",
                            "--run", name, "--engine", "distributed", "--workers", ",".join(workers),
                            "--delegate-master", "--min-identity", "-1", "--retries", "0",
                            "--template", str(work / "tiny.json"), "--out", str(out)]) == 0
    files = sorted(glob.glob(str(out / "attempt-1" / "wave-*.json")))
    plan = sheet_jobs.read_plan(str(out))
    wanted = {job["id"] for job in plan["attempts"][0]["jobs"]}
    started, cpu = time.perf_counter(), cpu_seconds(processes[1:])
    for path in files:
        with open(path, encoding="utf-8") as handle:
            status, answer = processes[0].comfy.post("/distributed/queue", json.load(handle))
        assert status == 200 and not answer.get("node_errors"), answer
    while True:
        done = {os.path.basename(p).removeprefix("sheet_").removesuffix("_report.json") for process in processes
                for p in glob.glob(str(process.output / "genaffect_jobs" / name / "*_report.json"))}
        if wanted <= done:
            elapsed, cpu = time.perf_counter() - started, cpu_seconds(processes[1:]) - cpu
            break
        time.sleep(0.5)
    while not all(p.idle() for p in processes):  # the master's collectors finish before the next run
        time.sleep(0.5)
    status = sheet_jobs.collect(plan, [str(p.output) for p in processes])
    assert status["counts"]["missing"] == 0 and status["made_twice"] == 0, status["counts"]
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="jobs per timed run (2 faces each)")
    parser.add_argument("--repeats", type=int, default=4, help="timed runs on each side")
    args = parser.parse_args()
    import distributed_lane as lane
    import sheet_jobs

    if not (lane.COMFYUI_DIR and lane.DISTRIBUTED):
        sys.exit("set COMFYUI_DIR, COMFYUI_PYTHON and COMFYUI_DISTRIBUTED (CONTRIBUTING.md)")
    work = Path(tempfile.mkdtemp(prefix="genaffect_sheet_jobs_"))
    lane.write_models(work / "models")
    photos = lane.write_photos(work / "people", {"ann": 1, "bob": 2})
    lane.tiny_template(work / "tiny.json")
    processes = lane.build_cluster(work, photos)
    try:
        run_jobs(lane, sheet_jobs, work, processes, "warmup", ["1", "2"], 2)
        times, cpus = {1: [], 2: []}, {1: [], 2: []}
        order = [1, 2, 2, 1] * ((args.repeats + 1) // 2)
        for number, count in enumerate(order[:2 * args.repeats]):
            seconds, cpu = run_jobs(lane, sheet_jobs, work, processes, f"w{count}-{number}", ["1", "2"][:count],
                                    args.jobs)
            times[count].append(seconds)
            cpus[count].append(cpu)
            print(f"{count} worker(s): {args.jobs} jobs ({2 * args.jobs} faces) in {seconds:.1f} s, "
                  f"{cpu / seconds:.2f} cores busy", flush=True)
    finally:
        lane.stop(processes)
    faces = 2 * args.jobs * args.repeats
    rate = {count: 60 * faces / sum(values) for count, values in times.items()}
    ratio = sum(times[1]) / sum(times[2])
    busy = {count: sum(cpus[count]) / sum(times[count]) for count in times}
    load = os.getloadavg()[2]
    print(f"faces per minute: one worker {rate[1]:.2f}, two workers {rate[2]:.2f}; two workers are {ratio:.2f}x as "
          f"fast (sum of {args.repeats} runs each); cores kept busy: {busy[1]:.2f} and {busy[2]:.2f} "
          f"({os.cpu_count()} CPU cores, load average {load:.1f} over 15 minutes)")
    save_result("sheet_jobs", {"jobs": args.jobs, "repeats": args.repeats, "seconds": times, "cpu_seconds": cpus,
                               "faces_per_minute": rate, "speedup": ratio, "cores_busy": busy,
                               "cores": os.cpu_count(), "load_average_15min": load})


if __name__ == "__main__":
    main()
