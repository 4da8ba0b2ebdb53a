"""Measure the pixel copy check (``copy_checks.pixel_similarity``) on real photos: choose its threshold on one half
of the people, report its hit rates on copies and its false positives on genuine photos on the other half - beside
the identity rule (``copy_checks.copied`` from the ArcFace cosine alone) and the two combined.

    python tools/measure_pixel_copies.py --photos PHOTOS --readings DIR --models MODELS [--posed jaffe,taiwan,kdef]
        [--wild muxspace] [--pairs 600] [--copies 60] [--json pixel_copies.json]

PHOTOS holds <source>/<expression>/<person>/... (the photos the readings were made of; never downloaded here).
DIR holds readings_<source>.npz (tools/read_labelled_photos.py: per photo the detector's 5 keypoints, the ArcFace
embedding, label, person, photo path). MODELS is a ComfyUI-style models folder with
insightface/models/buffalo_sc_int8 (SCRFD det_500m + ArcFace w600k_mbf), the pack's own face analyzer.

People are split in halves by a hash of their id (``crc32("source:person") % 2``, as tools/measure_judge.py):
- the threshold: the 99.5th percentile of pixel similarities between two photos of one person showing different
  expressions, people of the first half of the posed sources;
- false positives: the second half's genuine pairs (a photo against another photo of its person as the
  reference), "another expression" and "the same expression, another photo", at most --pairs per source each;
- hits: --copies photos per source of the second half, each copied (exact, JPEG 75, resized to half and back,
  mirrored, cropped 4 % off left/top and 6 % off right/bottom), the copy's face found, aligned and embedded by the
  pack's face analyzer as Face Metrics does, compared with the photo's own aligned crop and embedding.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import io
import json
import sys
import zlib

import numpy as np
from pack_loader import import_pack
from PIL import Image

KINDS = ("exact", "jpeg75", "resize0.5", "mirror", "crop")


def measured_half(person: str) -> bool:
    """The half the rates are measured on (the other chose the thresholds): the split of tools/measure_judge.py."""
    return zlib.crc32(person.encode()) % 2 == 1


def copy_of(rgb: np.ndarray, kind: str) -> np.ndarray:
    h, w = rgb.shape[:2]
    image = Image.fromarray(rgb)
    if kind == "exact":
        return rgb.copy()
    if kind == "jpeg75":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=75)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    if kind == "resize0.5":
        small = image.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR)
        return np.asarray(small.resize((w, h), Image.BICUBIC))
    if kind == "mirror":
        return np.ascontiguousarray(rgb[:, ::-1])
    if kind == "crop":
        return np.ascontiguousarray(rgb[int(0.04 * h): h - int(0.06 * h), int(0.04 * w): w - int(0.06 * w)])
    raise ValueError(kind)


class Photos:
    """Each reading's photo under PHOTOS (its path after /<source>/) and its aligned crop, cached."""

    def __init__(self, genaffect, root: str, analyzer):
        self.images = genaffect.models.images
        self.root, self.analyzer, self.crops = root, analyzer, {}

    def rgb(self, source: str, stored_path: str) -> np.ndarray:
        relative = str(stored_path).replace("\\", "/").split(f"/{source}/", 1)[-1]
        return self.images.read_photo(os.path.join(self.root, source, relative))

    def crop(self, d: dict, i: int) -> np.ndarray:
        key = (d["source"], i)
        if key not in self.crops:
            rgb = self.rgb(d["source"], d["photo"][i])
            bgr = self.analyzer.align(self.images.rgb_to_bgr(rgb), d["det_kps"][i])
            self.crops[key] = self.images.bgr_to_rgb(bgr)
        return self.crops[key]


def load(directory: str, source: str) -> dict:
    with np.load(os.path.join(directory, f"readings_{source}.npz"), allow_pickle=False) as data:
        found = data["det_attempt"] >= 0
        d = {key: data[key][found] for key in ("det_kps", "embedding", "label", "person", "photo")}
    d["person"] = np.array([f"{source}:{p}" for p in d["person"]])
    d["source"] = source
    return d


def genuine_pairs(d: dict, half: bool, rng, limit: int) -> dict[str, np.ndarray]:
    """(photo, reference) pairs of one person in the chosen half: showing another expression / the same one."""
    by_person: dict[str, list[int]] = {}
    for i, person in enumerate(d["person"]):
        if measured_half(person) == half:
            by_person.setdefault(person, []).append(i)
    pairs = {"another expression": [], "the same expression, another photo": []}
    for members in by_person.values():
        for a in members:
            for b in members:
                if a != b:
                    same = d["label"][a] == d["label"][b]
                    pairs["the same expression, another photo" if same else "another expression"].append((a, b))
    out = {}
    for name, found in pairs.items():
        found = np.array(found, dtype=int).reshape(-1, 2)
        out[name] = found[rng.choice(len(found), limit, replace=False)] if len(found) > limit else found
    out["people"] = len(by_person)
    return out


def rate(flags) -> dict:
    flags = np.asarray(list(flags), dtype=bool)
    return {"n": len(flags), "rate": round(float(flags.mean()), 4) if len(flags) else None}


def verdicts(copies, cosines, pixels) -> dict:
    identity = [copies.copied(float(c), None)[0] for c in cosines]
    pixel = [p >= copies.COPY_PIXELS for p in pixels]
    return {"identity alone": rate(identity), "pixels": rate(pixel),
            "either": rate(a or b for a, b in zip(identity, pixel))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", required=True, help="folder of <source>/<expression>/<person>/photos")
    parser.add_argument("--readings", required=True, help="folder of readings_<source>.npz")
    parser.add_argument("--models", required=True, help="models folder with insightface/models/buffalo_sc_int8")
    parser.add_argument("--posed", default="jaffe,taiwan,kdef")
    parser.add_argument("--wild", default="muxspace", help="sources only measured, never used for the threshold")
    parser.add_argument("--pairs", type=int, default=600, help="genuine pairs per source and kind")
    parser.add_argument("--copies", type=int, default=60, help="photos copied per source")
    parser.add_argument("--json", default="pixel_copies.json")
    args = parser.parse_args(argv)
    genaffect = import_pack()
    copies = genaffect.models.evaluation.copy_checks
    from genaffect.models.face.face_analyzer import load_face_analyzer
    from genaffect.models.face.identity import ordered_faces
    from genaffect.models.files.onnx_providers import choose_providers

    analyzer = load_face_analyzer("buffalo_sc_int8", os.path.join(args.models, "insightface", "models",
                                                                  "buffalo_sc_int8"), choose_providers("CPU"))
    photos = Photos(genaffect, args.photos, analyzer)
    rng = np.random.default_rng(0)
    posed, wild = args.posed.split(","), [s for s in args.wild.split(",") if s]
    data = {source: load(args.readings, source) for source in posed + wild}

    # the threshold, from the first half of the posed sources
    fitted = []
    for source in posed:
        d = data[source]
        pairs = genuine_pairs(d, False, rng, args.pairs)["another expression"]
        fitted += [copies.pixel_similarity(photos.crop(d, a), photos.crop(d, b)) for a, b in pairs]
        print(f"{source}: {len(pairs)} pairs of the first half", flush=True)
    out = {"threshold": {"pairs": len(fitted), "p99.5": round(float(np.quantile(fitted, 0.995)), 4),
                         "max": round(float(np.max(fitted)), 4), "used": copies.COPY_PIXELS,
                         "pixel values": np.round(fitted, 4).tolist()},
           "false positives": {}, "hits": {}}
    print(json.dumps({k: v for k, v in out["threshold"].items() if k != "pixel values"}), flush=True)

    for source in posed + wild:
        d = data[source]
        pairs = genuine_pairs(d, True, rng, args.pairs)
        entry = {"people": pairs.pop("people")}
        for name, found in pairs.items():
            if not len(found):
                continue
            cosines = np.einsum("nd,nd->n", d["embedding"][found[:, 0]], d["embedding"][found[:, 1]])
            pixels = np.array([copies.pixel_similarity(photos.crop(d, a), photos.crop(d, b)) for a, b in found])
            entry[name] = {**verdicts(copies, cosines, pixels),
                           "pixel quantiles 50/99/100": np.round(np.quantile(pixels, [0.5, 0.99, 1.0]), 4).tolist(),
                           "cosine values": np.round(cosines, 4).tolist(),
                           "pixel values": np.round(pixels, 4).tolist()}
        out["false positives"][source] = entry

        mine = np.flatnonzero([measured_half(p) for p in d["person"]])
        hits = {}
        for i in rng.choice(mine, min(args.copies, len(mine)), replace=False):
            original = photos.rgb(source, d["photo"][i])
            reference_crop = photos.crop(d, int(i))
            reference_embedding = analyzer.embed([genaffect.models.images.rgb_to_bgr(reference_crop)])[0]
            for kind in KINDS:
                copy = copy_of(original, kind)
                bgr = genaffect.models.images.rgb_to_bgr(copy)
                faces, _ = ordered_faces(analyzer, bgr, "largest")
                row = hits.setdefault(kind, {"cosine": [], "pixels": [], "not found": 0})
                if not faces:
                    row["not found"] += 1
                    continue
                crop_bgr = analyzer.align(bgr, faces[0].keypoints)
                row["cosine"].append(float(analyzer.embed([crop_bgr])[0] @ reference_embedding))
                row["pixels"].append(copies.pixel_similarity(genaffect.models.images.bgr_to_rgb(crop_bgr),
                                                             reference_crop))
        out["hits"][source] = {kind: {**verdicts(copies, row["cosine"], row["pixels"]), "not found": row["not found"],
                                      "pixel min": round(float(np.min(row["pixels"])), 4),
                                      "cosine values": np.round(row["cosine"], 4).tolist(),
                                      "pixel values": np.round(row["pixels"], 4).tolist()}
                               for kind, row in hits.items()}
        print(source, json.dumps({"false positives": {k: {n: v for n, v in e.items() if "values" not in n}
                                                      if isinstance(e, dict) else e for k, e in entry.items()},
                                  "hits": {k: {n: v for n, v in e.items() if "values" not in n}
                                           for k, e in out["hits"][source].items()}}), flush=True)
    with open(args.json, "w") as handle:
        json.dump(out, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
