"""Sheet jobs for many people x expressions, run by an engine you already use; this command is not a scheduler: it
writes the job files, and reads what came back.

    python tools/sheet_jobs.py plan --people photos/ --expressions "happy, sad, surprised, angry" --per-job 8 \
        --engine distributed --workers 1,2 --out runs/cast/
    (queue the files with the engine: docs/scale.md)
    python tools/sheet_jobs.py collect --out runs/cast/ --results ComfyUI/output/genaffect_jobs/cast/
    python tools/sheet_jobs.py resume --out runs/cast/ --results ComfyUI/output/genaffect_jobs/cast/

A job is one person's photo and a slice of the expression list (at most --per-job), sampled as one set in one
process (consistent attention needs the whole set together): a slice is never split. The job's inputs are set by
the engine's own means: ComfyUI-Distributed's Distributed Value (one value per worker; a file per wave of as many
jobs as there are participants), or the body of a /prompt request (ComfyUI itself, or an API wrapper such as
comfyui-api; a file per job). Every job saves its faces and its guard report (GenAffect Save Sheet Job); collect
reads the reports and says, per face, passed, failed (and why) or never came back; resume writes jobs for only
those that failed or never came back - a passed face is never made again.

Queue the jobs of an attempt once, and run resume when the engine has nothing left of them in its queues: a job
still running when resume reads the reports counts as never come back and would be made twice.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pack_loader import PACK_DIR, import_pack  # noqa: E402

import_pack()
from genaffect.models.errors import GenAffectInputError  # noqa: E402
from genaffect.models.evaluation.guard_report import JOB_ID, SheetJob, find_reports, slug  # noqa: E402
from genaffect.models.expression.batch import split_list  # noqa: E402

PLAN = "plan.json"
STATUS = "status.json"
FORMAT = "genaffect.sheet_jobs"
VERSION = 1
TEMPLATE = os.path.join(PACK_DIR, "jobs", "sheet_job_flux2_klein.json")
ENGINES = ("prompt", "comfyui-api", "distributed")
PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_JOB_SEED = 2 ** 53  # Distributed Value reads numbers through a float: larger seeds would change on the way
CLIENT = "genaffect-sheet-jobs"
JOB_INPUTS = {"job": "STRING", "person": "STRING", "image": "COMBO", "expressions": "STRING", "seed": "INT"}
GUARD_SETTINGS = ("candidates", "retries", "min_identity", "max_expression_error")


@dataclass(frozen=True)
class Person:
    name: str
    photo: str  # the photo's file, where this command reads it


def read_people(path: str) -> list[Person]:
    """The people of a run: a folder of photos (one per person, named after them) or a text file of lines
    ``name, photo file`` (relative to the text file)."""
    if os.path.isdir(path):
        people = [Person(os.path.splitext(name)[0], os.path.join(path, name)) for name in sorted(os.listdir(path))
                  if name.lower().endswith(PHOTO_EXTENSIONS)]
    elif os.path.isfile(path):
        people = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                name, _, photo = line.partition(",")
                if not photo.strip():
                    raise GenAffectInputError(f"{path} line {number}: write 'name, photo file'.")
                people.append(Person(name.strip(), os.path.join(os.path.dirname(path), photo.strip())))
    else:
        raise GenAffectInputError(f"{path} does not exist; give a folder of photos (one per person) or a text file "
                                  "of lines 'name, photo'.")
    if not people:
        raise GenAffectInputError(f"no photos ({', '.join(PHOTO_EXTENSIONS)}) in {path}.")
    names = [person.name for person in people]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise GenAffectInputError(f"{', '.join(repeated)} appear(s) twice among the people; give each person once.")
    for person in people:
        if not os.path.isfile(person.photo):
            raise GenAffectInputError(f"{person.name}'s photo {person.photo} does not exist.")
    return people


def job_seed(base: int, run: str, person: str, expressions: list[str], attempt: int) -> int:
    """A job's seed: fixed by the run's seed and name, the person, the slice and the attempt (so a retried face gets
    a new seed, and the same plan gives the same seeds), below 2^53."""
    key = json.dumps([base, run, person, expressions, attempt]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % MAX_JOB_SEED


def slices(expressions: list[str], per_job: int) -> list[list[str]]:
    return [expressions[i:i + per_job] for i in range(0, len(expressions), per_job)]


def make_jobs(plan: dict, faces: dict[str, list[str]], attempt: int) -> list[dict]:
    """Jobs for ``faces`` (person -> expressions, in the plan's order), at most ``per_job`` expressions each."""
    jobs = []
    photos = {person["name"]: person["photo"] for person in plan["people"]}
    for person in plan["people"]:
        wanted = faces.get(person["name"], [])
        for number, part in enumerate(slices(wanted, plan["per_job"]), start=1):
            job_id = f"{plan['run']}-{slug(person['name'])}-{number:02d}-a{attempt}"
            seed = job_seed(plan["seed"], plan["run"], person["name"], part, attempt)
            jobs.append({"id": job_id, "person": person["name"], "photo": photos[person["name"]],
                         "expressions": part, "seed": seed})
    for job in jobs:  # refused here rather than by every worker
        SheetJob(job["id"], job["person"], job["photo"], tuple(job["expressions"]), job["seed"])
    return jobs


# ---- the job graph ----

def load_template(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        template = json.load(handle)
    if not isinstance(template, dict) or "nodes" in template or \
            not all(isinstance(node, dict) and "class_type" in node for node in template.values()):
        raise GenAffectInputError(f"{path} is not a workflow in ComfyUI's API format (the one /prompt takes); use a "
                                  "file of jobs/ or export yours with 'Export (API)'.")
    node_of(template, "GenAffectSheetJob", path)
    node_of(template, "GenAffectSaveSheetJob", path)
    return template


def node_of(prompt: dict, class_type: str, where: str = "the template", required: bool = True) -> str | None:
    found = [key for key, node in prompt.items() if node["class_type"] == class_type]
    if len(found) > 1 or (required and not found):
        raise GenAffectInputError(f"{where} must hold exactly one {class_type} node (it holds {len(found)}).")
    return found[0] if found else None


def job_prompt(plan: dict, template: dict, values: dict | None) -> dict:
    """The template with the run's settings; with ``values`` (a job's inputs) also the job's."""
    prompt = copy.deepcopy(template)
    save = node_of(prompt, "GenAffectSaveSheetJob")
    prompt[save]["inputs"]["filename_prefix"] = plan["prefix"]
    guard = node_of(prompt, "GenAffectSamplingGuard", required=False)
    if plan["guard"]:
        if guard is None:
            raise GenAffectInputError("the template has no GenAffect Sampling Guard to apply --candidates, --retries, "
                                      "--min-identity or --max-expression-error to.")
        prompt[guard]["inputs"].update(plan["guard"])
    if values is not None:
        prompt[node_of(prompt, "GenAffectSheetJob")]["inputs"].update(values)
    return prompt


def job_values(job: dict, photo: str) -> dict:
    return {"job": job["id"], "person": job["person"], "image": photo, "expressions": ", ".join(job["expressions"]),
            "seed": job["seed"]}


def photo_name(plan: dict, job: dict) -> str:
    """The photo as the engine's ComfyUI finds it: its name in the input folder (under --photo-folder)."""
    return plan["photo_folder"] + os.path.basename(job["photo"])


def prompt_body(plan: dict, template: dict, job: dict) -> dict:
    """ComfyUI's POST /prompt."""
    return {"prompt": job_prompt(plan, template, job_values(job, photo_name(plan, job))), "client_id": CLIENT}


def comfyui_api_body(plan: dict, template: dict, job: dict) -> dict:
    """comfyui-api's POST /prompt: the photo as a URL (--photo-url) or inline (base64), which the wrapper stores in
    the input folder and passes on as a path; the job's id names the request and prefixes its files."""
    if plan["photo_url"]:
        photo = plan["photo_url"] + os.path.basename(job["photo"])
    else:
        with open(job["photo"], "rb") as handle:
            photo = base64.b64encode(handle.read()).decode("ascii")
    return {**plan["request"], "id": job["id"], "prompt": job_prompt(plan, template, job_values(job, photo))}


def distributed_bodies(plan: dict, template: dict, jobs: list[dict]) -> list[dict]:
    """ComfyUI-Distributed's POST /distributed/queue, one per wave of as many jobs as participants: the Sheet
    Job's inputs come from Distributed Value nodes (the master reads default_value, worker k of the wave its value
    "k"), and a Distributed Collector after Save Sheet Job brings the faces to the master. A wave with fewer jobs
    enables fewer workers, so no worker falls back to the master's value and makes a job twice."""
    workers, delegate = plan["workers"], plan["delegate_master"]
    if not workers:
        raise GenAffectInputError("--engine distributed needs --workers: the ids of the master's workers "
                                  "(GET /distributed/config), in the order of its configuration.")
    size = len(workers) + (0 if delegate else 1)
    bodies = []
    for start in range(0, len(jobs), size):
        wave = jobs[start:start + size]
        on_master = None if delegate else wave[0]
        on_workers = wave if delegate else wave[1:]
        prompt = job_prompt(plan, template, None)
        sheet_job = node_of(prompt, "GenAffectSheetJob")
        for name, kind in JOB_INPUTS.items():
            def value(job, name=name):
                return str(job_values(job, photo_name(plan, job))[name])
            per_worker = {"_type": kind, **{str(k + 1): value(job) for k, job in enumerate(on_workers)}}
            node = f"job_{name}"
            prompt[node] = {"class_type": "DistributedValue", "_meta": {"title": f"job: {name}"}, "inputs": {
                "default_value": value(on_master) if on_master else "",  # "": never a job, so never made twice
                "worker_values": json.dumps(per_worker)}}
            prompt[sheet_job]["inputs"][name] = [node, 0]
        save = node_of(prompt, "GenAffectSaveSheetJob")
        prompt["collect"] = {"class_type": "DistributedCollector", "inputs": {"images": [save, 0],
                                                                              "load_balance": False}}
        prompt["collected"] = {"class_type": "PreviewImage", "inputs": {"images": ["collect", 0]}}
        bodies.append({"prompt": prompt, "client_id": CLIENT, "delegate_master": delegate,
                       "enabled_worker_ids": workers[:len(on_workers)]})
    return bodies


def write_job_files(plan: dict, jobs: list[dict], attempt: int, folder: str) -> list[str]:
    """The attempt's job files in ``folder``/attempt-N/: one per job, or one per wave for ComfyUI-Distributed (all
    made before anything is written)."""
    template = load_template(plan["template"])
    if plan["engine"] == "distributed":
        named = [(f"wave-{n:04d}.json", body) for n, body in enumerate(distributed_bodies(plan, template, jobs), 1)]
    else:
        make = prompt_body if plan["engine"] == "prompt" else comfyui_api_body
        named = [(f"{job['id']}.json", make(plan, template, job)) for job in jobs]
    target = os.path.join(folder, f"attempt-{attempt}")
    if os.path.exists(target):
        raise GenAffectInputError(f"{target} exists already; each attempt is written once (resume writes the next).")
    os.makedirs(target)
    for name, body in named:
        with open(os.path.join(target, name), "w", encoding="utf-8") as handle:
            json.dump(body, handle, indent=1)
    return [os.path.join(target, name) for name, _ in named]


# ---- the plan, what came back, what to make again ----

def new_plan(args) -> dict:
    expressions = split_list(args.expressions)
    if not expressions:
        raise GenAffectInputError("--expressions is empty; give library names separated by commas.")
    repeated = sorted({e for e in expressions if expressions.count(e) > 1})
    if repeated:
        raise GenAffectInputError(f"{', '.join(repeated)} appear(s) twice in --expressions; name each once.")
    if not JOB_ID.match(args.run):
        raise GenAffectInputError(f"--run {args.run!r}: use letters, digits, '.', '_' and '-' (it names the jobs).")
    if args.per_job < 1 or not 0 <= args.seed < MAX_JOB_SEED:
        raise GenAffectInputError("--per-job must be 1 or more and --seed between 0 and 2^53.")
    workers = [w.strip() for w in (args.workers or "").split(",") if w.strip()]
    if args.engine != "distributed" and (workers or args.delegate_master):
        raise GenAffectInputError("--workers and --delegate-master are for --engine distributed.")
    if args.engine == "distributed" and not workers:
        raise GenAffectInputError("--engine distributed needs --workers: the ids of the master's workers "
                                  "(GET /distributed/config), in the order of its configuration.")
    load_template(args.template)  # refused before anything is written
    guard = {name: getattr(args, name) for name in GUARD_SETTINGS if getattr(args, name) is not None}
    folder = args.photo_folder.strip("/")
    prefix = args.prefix or ("sheet" if args.engine == "comfyui-api" else f"genaffect_jobs/{args.run}/sheet")
    if args.engine == "comfyui-api" and "/" in prefix:
        raise GenAffectInputError("comfyui-api returns only files at the top of ComfyUI's output folder: give a "
                                  "--prefix without '/'.")
    try:
        request = json.loads(args.request or "{}")
    except ValueError as error:
        raise GenAffectInputError(f"--request is not JSON ({error}).") from None
    if not isinstance(request, dict) or {"id", "prompt"} & set(request) or (request and args.engine != "comfyui-api"):
        raise GenAffectInputError("--request takes a JSON object of comfyui-api's request fields other than id and "
                                  "prompt (e.g. s3, webhook_v2), for --engine comfyui-api.")
    return {"format": FORMAT, "version": VERSION, "run": args.run, "template": os.path.abspath(args.template),
            "engine": args.engine, "workers": workers, "delegate_master": args.delegate_master,
            "photo_folder": folder + "/" if folder else "", "photo_url": args.photo_url or "",
            "prefix": prefix, "request": request, "seed": args.seed, "per_job": args.per_job, "guard": guard,
            "people": [{"name": p.name, "photo": os.path.abspath(p.photo)} for p in read_people(args.people)],
            "expressions": expressions, "attempts": []}


def read_plan(folder: str) -> dict:
    path = os.path.join(folder, PLAN)
    try:
        with open(path, encoding="utf-8") as handle:
            plan = json.load(handle)
    except (OSError, ValueError) as error:
        raise GenAffectInputError(f"{path} cannot be read ({error}); run 'plan' first, with --out {folder}.") from None
    if plan.get("format") != FORMAT or plan.get("version") != VERSION:
        raise GenAffectInputError(f"{path} is not a plan of this command (version {VERSION}).")
    return plan


def save_json(path: str, value: dict) -> None:
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1)
    os.replace(partial, path)


def add_attempt(plan: dict, folder: str, faces: dict[str, list[str]]) -> tuple[int, list[dict], list[str]]:
    attempt = len(plan["attempts"]) + 1
    jobs = make_jobs(plan, faces, attempt)
    files = write_job_files(plan, jobs, attempt, folder) if jobs else []
    plan["attempts"].append({"attempt": attempt, "jobs": jobs,
                             "files": [os.path.relpath(f, folder) for f in files]})
    save_json(os.path.join(folder, PLAN), plan)
    return attempt, jobs, files


def collect(plan: dict, results: list[str]) -> dict:
    """Every face of the plan: passed (or made with no guard: not judged), failed (with why, per attempt) or never
    come back; and the faces made more than once, the reports of other runs and the ones that cannot be read."""
    attempt_of = {job["id"]: entry["attempt"] for entry in plan["attempts"] for job in entry["jobs"]}
    planned = {(person["name"], expression) for person in plan["people"] for expression in plan["expressions"]}
    reports, unusable = find_reports(results)
    seen: dict[tuple[str, str], list[dict]] = {}
    other_runs = 0
    for saved in reports:
        job = saved.job
        if job["id"] not in attempt_of:
            other_runs += 1
            continue
        for face in saved.report["expressions"]:
            key = (job["person"], face["expression"])
            if key not in planned:
                unusable.append(f"{saved.path}: {key} is not a face of the plan")
                continue
            seen.setdefault(key, []).append({
                "job": job["id"], "attempt": attempt_of[job["id"]], "passed": face["passed"],
                "failures": face["failures"], "file": saved.file(face["file"]), "report": saved.path,
                "seed": face["seed"], "round": face["round"]})
    faces = []
    for person in plan["people"]:
        for expression in plan["expressions"]:
            made = sorted(seen.get((person["name"], expression), []), key=lambda m: (m["attempt"], m["job"]))
            kept = [m for m in made if m["passed"] is not False]
            state = "passed" if any(m["passed"] for m in kept) else "not judged" if kept else \
                "failed" if made else "missing"
            faces.append({"person": person["name"], "expression": expression, "state": state,
                          "kept": kept[0] if kept else None, "made": made, "made_twice": len(kept) > 1})
    counts = {state: sum(f["state"] == state for f in faces) for state in ("passed", "not judged", "failed", "missing")}
    return {"run": plan["run"], "faces": faces, "counts": counts, "planned": len(faces),
            "made_twice": sum(f["made_twice"] for f in faces), "reports": len(reports),
            "other_runs": other_runs, "unusable": unusable}


def to_redo(plan: dict, status: dict, max_attempts: int) -> tuple[dict[str, list[str]], list[dict]]:
    """Person -> the expressions to make again (failed with attempts left, or never come back), in the plan's
    order; and the failed faces given up after ``max_attempts``."""
    redo, given_up = {}, []
    for face in status["faces"]:
        if face["state"] in ("passed", "not judged"):
            continue
        tried = len({m["attempt"] for m in face["made"]})
        if face["state"] == "failed" and tried >= max_attempts:
            given_up.append(face)
            continue
        redo.setdefault(face["person"], []).append(face["expression"])
    return redo, given_up


def summary(status: dict) -> str:
    c = status["counts"]
    lines = [f"run {status['run']}: {status['planned']} faces planned, {status['reports']} job reports read: "
             f"{c['passed']} passed, {c['not judged']} made without a guard, {c['failed']} failed, {c['missing']} "
             f"never came back; {status['made_twice']} made more than once."]
    for face in status["faces"]:
        if face["state"] == "failed":
            why = "; ".join(face["made"][-1]["failures"]) or "no reason given"
            lines.append(f"  failed: {face['person']} / {face['expression']} ({len(face['made'])} tries; {why})")
    for face in status["faces"]:
        if face["state"] == "missing":
            lines.append(f"  never came back: {face['person']} / {face['expression']}")
    if status["other_runs"]:
        lines.append(f"  {status['other_runs']} report(s) of other runs ignored")
    lines += [f"  unusable: {entry}" for entry in status["unusable"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="write the jobs of a run (attempt 1)")
    plan.add_argument("--people", required=True, help="a folder of photos, one per person named after them, or a "
                      "text file of lines 'name, photo'")
    plan.add_argument("--expressions", required=True, help="library names, separated by commas")
    plan.add_argument("--per-job", type=int, default=8, help="expressions per job at most (a job is one set, one "
                      "process; memory grows with it)")
    plan.add_argument("--seed", type=int, default=0, help="the run's seed; each job's seed derives from it")
    plan.add_argument("--run", default="run", help="the run's name: it starts every job id")
    plan.add_argument("--engine", choices=ENGINES, default="prompt", help="prompt: ComfyUI's /prompt; comfyui-api: "
                      "the API wrapper's /prompt; distributed: ComfyUI-Distributed's /distributed/queue")
    plan.add_argument("--workers", help="distributed: the master's worker ids, in the order of its configuration")
    plan.add_argument("--delegate-master", action="store_true", help="distributed: the master runs no job itself")
    plan.add_argument("--template", default=TEMPLATE, help="the sheet job in API format (default: %(default)s)")
    plan.add_argument("--photo-folder", default="", help="where the photos are inside ComfyUI's input folder, on "
                      "every machine (default: its top)")
    plan.add_argument("--photo-url", help="comfyui-api: the address the photos can be downloaded from (their file "
                      "names appended); default: each photo inline in its job (base64)")
    plan.add_argument("--request", help="comfyui-api: more fields of every request, as JSON (e.g. "
                      "'{\"s3\": {\"bucket\": \"b\", \"prefix\": \"cast/\", \"async\": true}}')")
    plan.add_argument("--prefix", help="Save Sheet Job's filename_prefix (default genaffect_jobs/<run>/sheet; for "
                      "comfyui-api: sheet)")
    plan.add_argument("--candidates", type=int, help="the guard's candidates per expression (default: the template's)")
    plan.add_argument("--retries", type=int, help="the guard's retries (default: the template's)")
    plan.add_argument("--min-identity", type=float, help="the guard's min_identity (default: the template's)")
    plan.add_argument("--max-expression-error", type=float, help="the guard's max_expression_error")
    for name, what in (("collect", "say what came back, face by face (writes status.json)"),
                       ("resume", "write jobs for the faces that failed or never came back")):
        command = commands.add_parser(name, help=what)
        command.add_argument("--results", required=True, nargs="+", help="the folders the jobs saved into (each "
                             "machine's, copied together or each named)")
        if name == "resume":
            command.add_argument("--max-attempts", type=int, default=3, help="tries per face before it is given up")
            command.add_argument("--workers", help="distributed: the workers to give the new jobs to, when they are "
                                 "not the plan's (e.g. one was lost)")
    for command in commands.choices.values():
        command.add_argument("--out", required=True, help="the run's folder: plan.json, status.json, attempt-N/")
    args = parser.parse_args(argv)
    try:
        if args.command == "plan":
            if os.path.exists(os.path.join(args.out, PLAN)):
                raise GenAffectInputError(f"{args.out} holds a plan already; collect or resume it, or choose another "
                                          "--out.")
            plan = new_plan(args)
            os.makedirs(args.out, exist_ok=True)
            everyone = {person["name"]: list(plan["expressions"]) for person in plan["people"]}
            attempt, jobs, files = add_attempt(plan, args.out, everyone)
            print(f"{len(jobs)} jobs for {len(plan['people'])} people x {len(plan['expressions'])} expressions in "
                  f"{len(files)} file(s): {os.path.join(args.out, f'attempt-{attempt}')}")
            return 0
        plan = read_plan(args.out)
        status = collect(plan, args.results)
        save_json(os.path.join(args.out, STATUS), status)
        print(summary(status))
        if args.command == "resume":
            redo, given_up = to_redo(plan, status, args.max_attempts)
            for face in given_up:
                print(f"  given up after {args.max_attempts} tries: {face['person']} / {face['expression']}")
            if not redo:
                print("nothing to make again.")
                return 0
            if args.workers is not None:
                if plan["engine"] != "distributed":
                    raise GenAffectInputError("--workers is for a run on --engine distributed.")
                plan["workers"] = [w.strip() for w in args.workers.split(",") if w.strip()]
            attempt, jobs, files = add_attempt(plan, args.out, redo)
            print(f"{sum(len(v) for v in redo.values())} faces to make again: {len(jobs)} jobs in {len(files)} "
                  f"file(s): {os.path.join(args.out, f'attempt-{attempt}')}")
        return 0
    except GenAffectInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
