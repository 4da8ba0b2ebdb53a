"""The forge: sheets made by many jobs, with their guard reports -> the adapter's training shards.

Each job saved its faces, a copy of the person's reference photo and its report (GenAffect Save Sheet Job). A face
goes into the data when its report says it passed the guard; failed faces, faces made with no guard and a second
copy of a face already taken are left out and counted. Each kept face is analysed as the dataset builder analyses a
photo (``dataset.extract_faces``: found, aligned, its expression read), and conditions the adapter with:

- the identity of the **reference photo** (the ArcFace embedding the generation was asked to keep), not the
  generated face's own;
- the expression the estimator **reads** on the generated face (blendshapes, FLAME-55 with SMIRK), not the one it
  was asked for (kept beside it, in the shard's metadata ``asked``), so a face that drifted teaches what it shows;
- the judge's class of the face when its report has one (``judge_top``, the landmark judge), and its head pose.

Each distinct reference photo is also a row of its own (a real photo of the person, its own expression), so every
person has a real photo to pair with in the edit setting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re

import numpy as np

from ..models.errors import GenAffectInputError, NoFaceFoundError
from ..models.evaluation.guard_report import find_reports
from .dataset import CHUNK, DEFAULT_CAPTION, ShardWriter, Source, extract_faces, read_frames

log = logging.getLogger(__name__)


def _digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def forge(results: list[str], output: str, analyzer, estimator, encode_images, encode_text, *, size: int = 512,
          shard_size: int = 256, caption: str = DEFAULT_CAPTION, family: str | None = None, overwrite: bool = False,
          on_progress=None) -> dict:
    """Read every job report under ``results`` and write the passed faces (and the reference photos) as shards to
    ``output``; returns the counts (also written to ``output``/dataset.json)."""
    existing = [n for n in os.listdir(output) if n.startswith("shard-") or n == "dataset.json"] \
        if os.path.isdir(output) else []
    if existing and not overwrite:
        raise GenAffectInputError(f"{output} already holds a data set ({existing[0]}, ...); choose an empty folder, or "
                                  "pass --overwrite to replace it.")
    for name in existing:
        os.remove(os.path.join(output, name))
    reports, unusable = find_reports(results)
    if not reports:
        raise GenAffectInputError(f"no job reports (*_report.json) under {', '.join(results)}"
                                  + (f"; unusable: {unusable[0]}" if unusable else "."))
    persons = sorted({saved.job["person"] for saved in reports})
    counts = {"faces_in": 0, "passed": 0, "failed": 0, "not_judged": 0, "made_twice": 0, "no_reference": 0,
              "no_face_when_forged": 0, "forged": 0, "references": 0}
    reasons: dict[str, int] = {}
    skipped: list[str] = list(unusable)
    writer = ShardWriter(output, persons, encode_images, encode_text, family, shard_size)
    references: dict[str, np.ndarray | None] = {}  # photo digest -> its identity (None: no face in it)
    taken: set[tuple[str, str]] = set()
    pending: list[tuple[Source, str, np.ndarray, dict]] = []  # frames of generated faces, with what the report says

    def reference_identity(saved) -> np.ndarray | None:
        name = saved.job.get("reference")
        if not name or not os.path.isfile(saved.file(name)):
            return None
        digest = _digest(saved.file(name))
        if digest not in references:
            source = Source(saved.job["person"], saved.file(name), caption)
            found = extract_faces([(source, source.path, next(read_frames(source.path))[1])], analyzer, estimator,
                                  size)
            references[digest] = found.faces[0].identity if found.faces else None
            if found.faces:
                writer.add(found.faces)
                counts["references"] += 1
            else:
                skipped.extend(f"{reason} (a reference photo)" for reason in found.skipped)
        return references[digest]

    def analyse() -> None:
        found = extract_faces([frame[:3] for frame in pending], analyzer, estimator, size)
        by_origin = {origin: (identity, face) for _, origin, _, (identity, face) in pending}
        for face in found.faces:
            identity, entry = by_origin[face.origin]
            face.identity = identity  # the reference photo's: what the generation was asked to keep
            face.judge_class, face.asked = entry.get("judge_top"), entry["expression"]
        counts["forged"] += len(found.faces)
        counts["no_face_when_forged"] += len(pending) - len(found.faces)
        skipped.extend(found.skipped)
        writer.add(found.faces)
        pending.clear()

    for number, saved in enumerate(reports):
        identity = reference_identity(saved)
        for entry in saved.report["expressions"]:
            counts["faces_in"] += 1
            key = (saved.job["person"], entry["expression"])
            if entry["passed"] is None:
                counts["not_judged"] += 1
                continue
            if not entry["passed"]:
                counts["failed"] += 1
                for reason in entry["failures"] or ["no reason given"]:
                    kind = re.sub(r"-?\d+\.\d+", "x", reason)  # "identity cosine x below x": counted by kind
                    reasons[kind] = reasons.get(kind, 0) + 1
                continue
            counts["passed"] += 1
            if key in taken:
                counts["made_twice"] += 1
                continue
            if identity is None:
                counts["no_reference"] += 1
                skipped.append(f"{saved.path}: {entry['file']} left out: its job's reference photo is missing or "
                               "shows no face")
                continue
            taken.add(key)
            path = saved.file(entry["file"])
            try:
                rgb = next(read_frames(path))[1]
            except (OSError, GenAffectInputError, StopIteration) as error:
                counts["no_face_when_forged"] += 1
                skipped.append(f"{path}: cannot be read ({error})")
                continue
            pending.append((Source(saved.job["person"], path, caption), path, rgb, (identity, entry)))
            if len(pending) == CHUNK:
                analyse()
        if pending:  # one job's faces analysed together: one person, as the identity code expects
            analyse()
        if on_progress is not None:
            on_progress(number + 1, len(reports))
    writer.close()
    if not writer.shards:
        raise NoFaceFoundError(f"no usable face in the {len(reports)} job report(s): {counts}")
    summary = {"persons": persons, "faces": writer.faces, "size": size, "shards": writer.shards, "counts": counts,
               "failures": dict(sorted(reasons.items(), key=lambda item: -item[1])), "skipped": skipped,
               "reports": len(reports)}
    with open(os.path.join(output, "dataset.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    log.info("GenAffect forge: %d faces in, %d passed, %d forged (+%d reference photos) into %d shards.",
             counts["faces_in"], counts["passed"], counts["forged"], counts["references"], len(writer.shards))
    return summary
