"""The guard report as a versioned record machines read: what a set sampler's guard_report output holds, and the
same report saved with a sheet job's images (which job, which person, each face's file), so that many jobs run on
several GPUs or machines can be collected, resumed where faces failed or never came back, and turned into training
data. What a valid report is lives in one file, ``models/data/guard_report.schema.json`` (JSON Schema), read by
the pack and by anyone else's tools.

A job's results are written image first, report last (renamed into place whole): a report on disk means every
image it names is there; a job killed half-way leaves no report, and its faces count as never come back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass

import numpy as np

from ..errors import GenAffectInputError
from ..expression.batch import split_list
from ..files.json_check import check

SCHEMA = "genaffect.guard_report"
VERSION = 1
SCHEMA_FILE = "guard_report.schema.json"
REPORT_SUFFIX = "_report.json"
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # also a file-name part: no spaces, slashes or dots first
NO_GUARD_SUMMARY = "no guard connected: the set was sampled once."


def stamped(report: dict) -> dict:
    """``report`` under this schema's name and version (first, so a reader sees them at once)."""
    return {"schema": SCHEMA, "version": VERSION, **report}


def unguarded(seed: int) -> dict:
    """The report of a set sampled once, with no guard: only its seed."""
    return stamped({"guarded": False, "seed": int(seed), "summary": NO_GUARD_SUMMARY})


def parse(report, what: str = "the guard report") -> dict:
    """A report given as JSON text or as a dict, checked against the schema."""
    if isinstance(report, str):
        try:
            report = json.loads(report)
        except ValueError as error:
            raise GenAffectInputError(f"{what} is not JSON ({error}); connect a GenAffect sampler's guard_report "
                                      "output unchanged.") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise GenAffectInputError(f"{what} is not a GenAffect guard report (no \"schema\": \"{SCHEMA}\"); connect the "
                                  "guard_report output of the Consistent Batch Sampler or the DiT Sampler.")
    if report.get("version") != VERSION:
        raise GenAffectInputError(f"{what} is version {report.get('version')!r} of the guard report; this GenAffect "
                                  f"reads version {VERSION}. Update GenAffect where the reports are read.")
    check(report, SCHEMA_FILE, what)
    return report


@dataclass(frozen=True)
class SheetJob:
    """One job: one person's photo and a slice of the expression list, sampled as one set with one seed."""

    id: str
    person: str
    photo: str  # the reference photo's name in ComfyUI's input folder
    expressions: tuple[str, ...]
    seed: int

    def __post_init__(self):
        if not JOB_ID.match(self.id or ""):
            raise GenAffectInputError(f"job id {self.id!r}: use letters, digits, '.', '_' and '-' only, starting with a "
                                      "letter or digit (it names the job's files).")
        if not self.person.strip():
            raise GenAffectInputError(f"job {self.id}: the person's name is empty; give the identity a name.")
        if not self.expressions:
            raise GenAffectInputError(f"job {self.id}: no expressions; give the job's slice of the expression list.")
        repeated = sorted({e for e in self.expressions if self.expressions.count(e) > 1})
        if repeated:
            raise GenAffectInputError(f"job {self.id}: {', '.join(repeated)} appear(s) twice in its expressions; each "
                                      "face of a set is one expression, named once.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise GenAffectInputError(f"job {self.id}: seed {self.seed!r} is not a whole number >= 0.")

    @classmethod
    def of(cls, id: str, person: str, photo: str, expressions: str, seed: int) -> SheetJob:
        return cls(id.strip(), person.strip(), photo, tuple(split_list(expressions)), int(seed))

    def record(self, reference: str | None) -> dict:
        return {"id": self.id, "person": self.person, "photo": self.photo, "reference": reference,
                "expressions": list(self.expressions), "seed": self.seed}


def job_report(report, job: SheetJob, files: list[str], reference: str | None = None) -> dict:
    """The report saved with a job's images: the guard's report (or, with no guard, one unjudged entry per face)
    with the job and each face's place and file."""
    report = parse(report)
    count = len(job.expressions)
    if len(files) != count:
        raise GenAffectInputError(f"job {job.id}: {len(files)} images for {count} expressions; the set must have one "
                                  "image per expression of the job.")
    if report["guarded"]:
        faces = [dict(face) for face in report["expressions"]]
        if len(faces) != count:
            raise GenAffectInputError(f"job {job.id}: the guard judged {len(faces)} faces but the job has {count} "
                                      "expressions; sample one image per expression of the job.")
        labels = [face["expression"] for face in faces]
        if labels != list(job.expressions) and labels != [f"image {i + 1}" for i in range(count)]:
            raise GenAffectInputError(
                f"job {job.id}: the guard judged the faces as {', '.join(labels)} but the job asks for "
                f"{', '.join(job.expressions)}; connect the job's expressions to the Expression Preset the guard's "
                "target comes from.")
        named = dict(zip(labels, job.expressions))  # a guard with no target numbers the images: name them
        report = {**report, "candidates": [{**c, "expression": named[c["expression"]]} for c in report["candidates"]],
                  "rounds": [{**r, **{k: [named[label] for label in r[k]] for k in ("sampled", "passed", "failed")}}
                             for r in report["rounds"]]}
    else:
        faces = [{"expression": label, "round": 1, "seed": report.get("seed", job.seed), "passed": None,
                  "failures": [], "face_found": None} for label in job.expressions]
    for index, (face, label, file) in enumerate(zip(faces, job.expressions, files)):
        face.update(expression=label, index=index, file=file)
    saved = {**report, "expressions": faces, "job": job.record(reference)}
    check(saved, SCHEMA_FILE, f"job {job.id}'s report")
    return saved


def slug(label: str) -> str:
    """A label as a file-name part: lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "face"


def job_stem(name: str, job_id: str) -> str:
    return f"{name}_{job_id}" if name else job_id


def save_job(folder: str, name: str, job: SheetJob, frames: list[np.ndarray], report,
             photo_path: str | None = None) -> tuple[dict, str]:
    """Write a job's faces (RGB uint8, one per expression in order), a copy of its reference photo and its report
    into ``folder`` as ``<name>_<job>_<NN>_<expression>.png``, ``..._reference<ext>`` and ``..._report.json``; the
    report last, renamed into place whole. Returns the saved report and its file name."""
    from PIL import Image

    stem = job_stem(name, job.id)
    files = [f"{stem}_{index + 1:02d}_{slug(label)}.png" for index, label in enumerate(job.expressions)]
    reference = None
    if photo_path is not None:
        reference = f"{stem}_reference{os.path.splitext(photo_path)[1].lower() or '.png'}"
    if len(frames) != len(files):
        raise GenAffectInputError(f"job {job.id}: {len(frames)} images for {len(files)} expressions; the set must have "
                                  "one image per expression of the job.")
    saved = job_report(report, job, files, reference)  # checked before anything is written
    os.makedirs(folder, exist_ok=True)
    for file, frame in zip(files, frames):
        _write_whole(os.path.join(folder, file), lambda path, frame=frame: Image.fromarray(frame).save(path, "PNG"))
    if reference is not None:
        _write_whole(os.path.join(folder, reference), lambda path: shutil.copyfile(photo_path, path))
    report_file = stem + REPORT_SUFFIX
    text = json.dumps(saved, indent=1)
    _write_whole(os.path.join(folder, report_file), lambda path: _write_text(path, text))
    return saved, report_file


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _write_whole(path: str, write) -> None:
    """Write to a temporary name beside ``path`` and rename it into place: a reader sees all of it or nothing."""
    partial = f"{path}.partial-{os.getpid()}"
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


@dataclass
class SavedReport:
    """A job's report as found on disk; its files are named relative to ``folder``."""

    path: str
    report: dict

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path)

    @property
    def job(self) -> dict:
        return self.report["job"]

    def file(self, name: str) -> str:
        return os.path.join(self.folder, name)


def find_reports(paths: list[str]) -> tuple[list[SavedReport], list[str]]:
    """Every job report (``*_report.json``) under ``paths`` (folders, searched down, or report files), sorted by
    path; and the ones that cannot be used (not JSON, not a job's report, another version), each with why."""
    found, unusable = [], []
    for path in paths:
        if os.path.isfile(path):
            candidates = [path]
        elif os.path.isdir(path):
            candidates = [os.path.join(directory, name) for directory, _, names in os.walk(path, followlinks=True)
                          for name in names if name.endswith(REPORT_SUFFIX)]
        else:
            raise GenAffectInputError(f"{path} does not exist; give the folders the jobs saved their results in (e.g. "
                                      "ComfyUI/output/genaffect_jobs on each machine, copied together).")
        for candidate in sorted(candidates):
            try:
                with open(candidate, encoding="utf-8") as handle:
                    report = parse(handle.read(), candidate)
                if "job" not in report:
                    raise GenAffectInputError(f"{candidate} is a guard report but not a job's (it names no job).")
                found.append(SavedReport(candidate, report))
            except (OSError, UnicodeDecodeError, GenAffectInputError) as error:
                unusable.append(f"{candidate}: {error}")
    return sorted(found, key=lambda saved: saved.path), unusable
