"""Measure the judge's decisions on real photos: the copy checks, "expression copied", and Select Best on mixed
pools of candidates - each with the pack's own code, on people the judge never trained on.

    python tools/measure_judge.py --readings DIR [--posed jaffe,taiwan,kdef] [--copies readings_copies.npz]

DIR holds readings_<source>.npz (tools/read_labelled_photos.py: landmarks, blendshapes, image sizes, ArcFace
embeddings, labels, people). Nothing is downloaded; no photo is read. For each posed source the landmark judge is
trained on the other sources (tools/train_expression_judge.py's trainer), so every number below is on people and a
source the judge never saw. Printed as Markdown (docs/judge.md) and written as JSON (--json).

- **copy checks** (``models/evaluation/copy_checks.py``): false positives on genuine photos of the same person -
  each photo against each other photo of its person (the reference), split into "another expression" (what a
  generated face is asked to be) and "the same expression, another photo"; hit rates on copies of a photo (exact,
  JPEG 75, resized to half and back, mirrored, cropped: ``--copies``, read from those copies), with and without
  the reference photo's landmarks;
- **expression copied** (``expression_judge.expression_copied``): false positives on genuine photos of an
  expression, judged relative to the person's neutral photo (the reference); hits on another neutral photo of the
  person standing in for a face that kept the reference's expression (the posed sources' measured half of the
  people: ``COPIED_PROBABILITY`` was chosen on the other half);
- **Select Best** (``models/evaluation/select_best.py``) on pools of real photos for one asked-for expression: the
  person showing it, the person showing another, a stranger (same source) showing it, a stranger showing another;
  and pools of three people all showing it. The identity is the mean of two other photos of the person; the
  judge reads every candidate relative to the person's neutral photo. Rates of the right person with the right
  expression, the right person with another, and a stranger.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import json
import sys
import zlib
from types import SimpleNamespace

import numpy as np

import train_expression_judge as T  # beside this script

CLASSES = T.CLASSES


def load(directory: str, source: str) -> dict:
    d = T.load_source(directory, source)
    with np.load(os.path.join(directory, f"readings_{source}.npz"), allow_pickle=False) as data:
        read = np.isfinite(data["landmarks"][:, 0, 0])
        for key in ("embedding", "det_box", "det_kps"):  # the face analyzer's reading of each photo
            d[key] = data[key][read]
    return d


def measured_half(person: str) -> bool:
    """People are split in halves by a hash of their id ("source:person"): the copy thresholds of
    copy_checks.py and expression_judge.COPIED_PROBABILITY were chosen on the other half; their rates are measured
    on this one (and copies were made of this half's photos only)."""
    return zlib.crc32(person.encode()) % 2 == 1


def rate(flags) -> dict:
    flags = np.asarray(list(flags), dtype=bool)
    return {"n": len(flags), "rate": round(float(flags.mean()), 4) if len(flags) else None}


# ------------------------------------------------------------------------------------------------ copy checks
def copy_checks(genaffect, judge, d: dict, rng, limit: int = 4000) -> dict:
    copies = genaffect.models.evaluation.copy_checks
    ok = np.isfinite(d["embedding"][:, 0])
    other, same = [], []
    by_person: dict[str, list[int]] = {}
    for i in np.flatnonzero(ok):
        if measured_half(d["person"][i]):
            by_person.setdefault(d["person"][i], []).append(int(i))
    for members in by_person.values():
        for a in members:
            for b in members:
                if a != b:
                    (same if d["label"][a] == d["label"][b] else other).append((a, b))
    out = {"people": len(by_person)}
    for name, pairs in (("another expression", other), ("the same expression, another photo", same)):
        pairs = np.array(pairs, dtype=int).reshape(-1, 2)
        if not len(pairs):
            continue
        if len(pairs) > limit:
            pairs = pairs[rng.choice(len(pairs), limit, replace=False)]
        cos = np.einsum("nd,nd->n", d["embedding"][pairs[:, 0]], d["embedding"][pairs[:, 1]])
        shape = shape_distance(judge, d, pairs[:, 0], pairs[:, 1])
        out[name] = {"with landmarks": rate(copies.copied(c, s)[0] for c, s in zip(cos, shape)),
                     "identity only": rate(copies.copied(c, None)[0] for c in cos),
                     "cosine quantiles": np.round(np.quantile(cos, [0.5, 0.95, 0.99, 1.0]), 4).tolist(),
                     "shape quantiles": np.round(np.quantile(shape, [0.0, 0.01, 0.05, 0.5]), 4).tolist()}
    return out


def shape_distance(judge, d: dict, rows: np.ndarray, references: np.ndarray) -> np.ndarray:
    out = np.zeros(len(rows))
    for reference in np.unique(references):
        mine = np.flatnonzero(references == reference)
        found = judge.shape_distances(genaffect_batch(d, rows[mine]), genaffect_batch(d, np.array([reference])),
                                      list(range(len(mine))))
        out[mine] = [found[i] for i in range(len(mine))]
    return out


def genaffect_batch(d: dict, rows: np.ndarray):
    from genaffect.models.expression.batch import ExpressionBatch

    return ExpressionBatch([str(i) for i in rows], blendshapes=d["blendshapes"][rows], landmarks=d["landmarks"][rows],
                           image_size=d["image_hw"][rows])


def copy_hits(genaffect, judge, copies_path: str) -> dict:
    """Each copy of a photo against the photo's own reading (copies_path: readings of copies, with 'kind' and the
    original's 'source' and 'index' in its readings file)."""
    copies = genaffect.models.evaluation.copy_checks
    with np.load(copies_path, allow_pickle=False) as data:
        c = {key: data[key] for key in data.files}
    out = {}
    originals = c["kind"] == "exact"
    key = {(s, int(i)): j for j, (s, i) in enumerate(zip(c["source"], c["index"])) if originals[j]}
    for kind in dict.fromkeys(c["kind"]):
        with_landmarks, identity_only, missed = [], [], 0
        for j in np.flatnonzero(c["kind"] == kind):
            o = key.get((c["source"][j], int(c["index"][j])))
            if o is None or not np.isfinite(c["embedding"][j, 0]) or not np.isfinite(c["landmarks"][j, 0, 0]):
                missed += 1
                continue
            original = {"landmarks": c["landmarks"], "image_hw": c["image_hw"], "blendshapes": c["blendshapes"]}
            cos = float(c["embedding"][j] @ c["embedding"][o])
            shape = shape_distance(judge, original, np.array([j]), np.array([o]))[0]
            with_landmarks.append(copies.copied(cos, shape)[0])
            identity_only.append(copies.copied(cos, None)[0])
        out[kind] = {"with landmarks": rate(with_landmarks), "identity only": rate(identity_only),
                     "not read": missed}
    return out


# ----------------------------------------------------------------------------------------- expression copied
def neutral_reference(d: dict, rows: np.ndarray) -> dict[str, int]:
    """Each person's first neutral photo in file order (the reference photo)."""
    out = {}
    for i in sorted(rows, key=lambda i: d["photo"][i]):
        if d["label"][i] == "neutral":
            out.setdefault(d["person"][i], int(i))
    return out


def expression_copied(genaffect, judge, d: dict, rows: np.ndarray) -> dict:
    J = genaffect.models.evaluation.expression_judge
    references = neutral_reference(d, rows)
    genuine, kept = [], []
    per_class: dict[str, list[bool]] = {}
    for person, reference in references.items():
        ref_batch = genaffect_batch(d, np.array([reference]))
        reference_class = judge.reference_class(ref_batch)
        mine = [i for i in rows if d["person"][i] == person and i != reference]
        if not mine:
            continue
        reading = judge.read(genaffect_batch(d, np.array(mine)), ref_batch)
        for row, i in enumerate(mine):
            top, p = reading.top(row)
            if d["label"][i] == "neutral":  # a face that kept the photo's expression, asked for another
                asked = "happy" if reference_class != "happy" else "sad"
                kept.append(J.expression_copied(top, p, reference_class, [asked], reading.taken_apart(row)))
            elif d["label"][i] in CLASSES:
                flag = J.expression_copied(top, p, reference_class, [d["label"][i]], reading.taken_apart(row))
                genuine.append(flag)
                per_class.setdefault(d["label"][i], []).append(bool(flag))
    # not judged (None: taken apart from the photo) counts as not flagged; how many were judged is given too
    return {"false positives on genuine expression photos": {**rate(map(bool, genuine)),
                                                             "judged": sum(f is not None for f in genuine)},
            "per class": {k: rate(v) for k, v in per_class.items()},
            "hits on another neutral photo of the person": {**rate(map(bool, kept)),
                                                            "judged": sum(f is not None for f in kept)}}


# ------------------------------------------------------------------------------------------------ pixel judge
def pixel_judge(genaffect, judge, d: dict, network) -> dict:
    """The expression network (the pack's runner, its card) on each photo's face (the detector's box and keypoints
    in the readings), against the labels and against the landmark judge reading the photo relative to the
    person's neutral photo: accuracy, agreement, each judge's accuracy where they agree and where not, and both
    judges averaged (Face Metrics' ``combine_judges``)."""
    fm = genaffect.models.evaluation.face_metrics
    boxes, keypoints = d["det_box"], d["det_kps"]
    references = neutral_reference(d, np.arange(len(d["label"])))
    truth, pixel, landmark, both = [], [], [], []
    for i in range(len(d["label"])):
        reference = references.get(d["person"][i])
        if d["label"][i] not in CLASSES or reference is None or reference == i or not np.isfinite(keypoints[i, 0, 0]):
            continue
        rgb = genaffect.models.images.read_photo(d["photo"][i])
        probabilities = network.classify(rgb, boxes[i], keypoints[i])
        reading = judge.read(genaffect_batch(d, np.array([i])), genaffect_batch(d, np.array([reference])))
        truth.append(d["label"][i])
        pixel.append(max(probabilities, key=probabilities.get))
        landmark.append(reading.top(0)[0])
        metrics = fm.ImageMetrics(0, d["label"][i], True, judge_probabilities=reading.probabilities_of(0),
                                  pixel_probabilities=probabilities)
        fm.combine_judges(metrics)
        both.append(metrics.both_top)
    truth, pixel, landmark, both = map(np.array, (truth, pixel, landmark, both))
    agree = pixel == landmark

    def macro(predicted, keep):
        recalls = [float((predicted[keep & (truth == c)] == c).mean()) for c in CLASSES if (keep & (truth == c)).any()]
        return round(float(np.mean(recalls)), 4) if recalls else None

    everything = np.ones(len(truth), bool)
    return {"photos": int(len(truth)), "pixel macro": macro(pixel, everything),
            "landmark macro": macro(landmark, everything), "both judges averaged macro": macro(both, everything),
            "agreement": round(float(agree.mean()), 4),
            "landmark accuracy where they agree": round(float((landmark[agree] == truth[agree]).mean()), 4),
            "landmark accuracy where they disagree": round(float((landmark[~agree] == truth[~agree]).mean()), 4),
            "pixel accuracy where they disagree": round(float((pixel[~agree] == truth[~agree]).mean()), 4)}


# ------------------------------------------------------------------------------------------------ Select Best
def image_metrics(genaffect, judge, d: dict, row: int, identity: np.ndarray, references: np.ndarray,
                  reference_photo: int, asked: str):
    fm = genaffect.models.evaluation.face_metrics
    copies = genaffect.models.evaluation.copy_checks
    J = genaffect.models.evaluation.expression_judge
    library = genaffect.models.expression.expression_library
    m = fm.ImageMetrics(0, asked, True)
    embedding = d["embedding"][row]
    m.identity_cosine = float(embedding @ identity)
    m.nearest_reference_cosine = float((references @ embedding).max())
    ref_batch = genaffect_batch(d, np.array([reference_photo]))
    shape = judge.shape_distances(genaffect_batch(d, np.array([row])), ref_batch, [0])[0]
    m.copy_suspected, m.copy_reason = copies.copied(m.nearest_reference_cosine, shape)
    reading = judge.read(genaffect_batch(d, np.array([row])), ref_batch)
    m.asked_classes = [asked]
    m.judge = reading.judge
    m.judge_probabilities = reading.probabilities_of(0)
    m.judge_top, m.judge_top_probability = reading.top(0)
    m.judge_probability = reading.probability(0, [asked])
    m.judge_correct = m.judge_top == asked
    m.expression_copied = J.expression_copied(m.judge_top, m.judge_top_probability,
                                              judge.reference_class(ref_batch), [asked], reading.taken_apart(0))
    m.blendshape_l1 = float(fm.blendshape_l1(d["blendshapes"][[row]], library.estimator_target(asked)[None])[0])
    return m


def outcome(sb, pool: list, metrics: list, best) -> str:
    """What Select Best chose; a stranger chosen where none of the person's photos is recognisably them (cosine
    under the person threshold: a mislabelled or unrecognisable photo) is counted apart."""
    what = pool[best.candidate][1]
    if what == "stranger" and not any(sb.is_person(m) for (_, who), m in zip(pool, metrics) if who != "stranger"):
        return "no candidate is the person"
    return what


def with_pixel_judge(genaffect, metrics, name: str, probabilities: dict[str, float]):
    """A copy of a candidate's metrics with the pixel judge's reading and both judges averaged, as Face Metrics
    gives them when an expression network is connected."""
    import dataclasses

    m = dataclasses.replace(metrics, pixel_judge=name, pixel_probabilities=probabilities)
    genaffect.models.evaluation.face_metrics.combine_judges(m)
    return m


def select_best_pools(genaffect, judge, d: dict, rows: np.ndarray, rng, pools: int = 600, half: bool = True,
                      network=None) -> dict:
    """Select Best's choices on pools of real photos; with an expression ``network`` also with both judges averaged,
    on the same pools ("..., both judges")."""
    sb = genaffect.models.evaluation.select_best
    pixel_readings: dict[int, dict[str, float]] = {}

    def choose(kind: str, pool: list, metrics: list) -> None:
        best = sb.mark_best([sb.Choice(0, k, k, m) for k, m in enumerate(metrics)], 1)[0]
        results[kind].append(outcome(sb, pool, metrics, best))
        if network is not None:
            for i, _ in pool:
                if i not in pixel_readings:
                    rgb = genaffect.models.images.read_photo(d["photo"][i])
                    pixel_readings[i] = network.classify(rgb, d["det_box"][i], d["det_kps"][i])
            both = [with_pixel_judge(genaffect, m, network.name, pixel_readings[i]) for (i, _), m in zip(pool, metrics)]
            best = sb.mark_best([sb.Choice(0, k, k, m) for k, m in enumerate(both)], 1)[0]
            results[kind + ", both judges"].append(outcome(sb, pool, both, best))

    ok = [int(i) for i in rows if np.isfinite(d["embedding"][i, 0]) and d["label"][i] in CLASSES
          and (not half or measured_half(d["person"][i]))]  # the identity margin was chosen on the other half
    by_person: dict[str, list[int]] = {}
    for i in ok:
        by_person.setdefault(d["person"][i], []).append(i)
    references = neutral_reference(d, np.array(ok))
    people = [p for p in by_person if p in references and len(by_person[p]) >= 5]
    results = {kind: [] for kind in ("mixed", "three people", "mixed, both judges", "three people, both judges")}
    for _ in range(pools):
        person = people[rng.integers(len(people))]
        mine = by_person[person]
        reference = references[person]
        asked = CLASSES[1 + rng.integers(len(CLASSES) - 1)]  # an expression other than the photo's neutral
        showing = [i for i in mine if d["label"][i] == asked and i != reference]
        others = [i for i in mine if d["label"][i] != asked and i != reference]
        strangers = [p for p in people if p != person]
        if not showing or not others:
            continue
        right, wrong = int(rng.choice(showing)), int(rng.choice(others))
        spare = [i for i in mine if i not in (right, wrong, reference)]
        if len(spare) < 2:
            continue
        identity_rows = [reference] + [int(i) for i in rng.choice(spare, 1, replace=False)]
        identity = d["embedding"][identity_rows].mean(axis=0)
        identity /= np.linalg.norm(identity)
        refs = d["embedding"][identity_rows]
        stranger = by_person[strangers[rng.integers(len(strangers))]]
        s_right = [i for i in stranger if d["label"][i] == asked]
        s_wrong = [i for i in stranger if d["label"][i] != asked]
        pool = [(right, "right person, right expression"), (wrong, "right person, another expression")]
        if s_right:
            pool.append((int(rng.choice(s_right)), "stranger"))
        if s_wrong:
            pool.append((int(rng.choice(s_wrong)), "stranger"))
        order = rng.permutation(len(pool))
        pool = [pool[k] for k in order]
        choose("mixed", pool, [image_metrics(genaffect, judge, d, i, identity, refs, reference, asked) for i, _ in pool])
        # three people, all showing the asked-for expression
        trio = [(right, "right person, right expression")]
        for other_person in rng.choice(strangers, min(len(strangers), 6), replace=False):
            theirs = [i for i in by_person[other_person] if d["label"][i] == asked]
            if theirs and len(trio) < 3:
                trio.append((int(rng.choice(theirs)), "stranger"))
        choose("three people", trio, [image_metrics(genaffect, judge, d, i, identity, refs, reference, asked)
                                      for i, _ in trio])
    return {kind: {"pools": len(outcomes), **{what: round(outcomes.count(what) / max(len(outcomes), 1), 4)
                                              for what in ("right person, right expression",
                                                           "right person, another expression", "stranger",
                                                           "no candidate is the person")}}
            for kind, outcomes in results.items() if outcomes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", required=True)
    parser.add_argument("--posed", default="jaffe,taiwan,kdef", help="posed sources: each measured with a judge "
                        "trained on the others")
    parser.add_argument("--wild", default="", help="sources measured with a judge trained on all posed sources "
                        "(never on them)")
    parser.add_argument("--copies", help="readings of copies of photos (copy hit rates)")
    parser.add_argument("--C", type=float, default=0.1)
    parser.add_argument("--mirror", action="store_true")
    parser.add_argument("--hidden", type=int, default=0)
    parser.add_argument("--read-mirrored", action="store_true", help="judges that read every face relative to its photo "
                        "as seen and in a mirror (train_expression_judge.py --read-mirrored)")
    parser.add_argument("--far", action="store_true", help="judges as shipped (train_expression_judge.py --far): the "
                        "far head trained on the --wild sources' people too, but their held-out fifth, the only ones "
                        "a wild source is then measured on")
    parser.add_argument("--pca", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--pools", type=int, default=600, help="Select Best pools per source")
    parser.add_argument("--network", help="an expression network (ONNX, with its card) to measure as the pixel judge")
    parser.add_argument("--only", default="copies,copied,pools,network", help="what to measure")
    parser.add_argument("--json", default="judge_measurements.json")
    args = parser.parse_args(argv)
    genaffect = T.import_pack()
    posed = args.posed.split(",")
    wild = [s for s in args.wild.split(",") if s]
    # without --far the posed heads only; with it the far head too, trained as train_expression_judge.py --far does
    settings = SimpleNamespace(C=args.C, mirror=args.mirror, read_mirrored=args.read_mirrored, refs=3,
                               hidden=args.hidden, pca=args.pca, alpha=args.alpha, far=args.far,
                               wild_sources=wild if args.far else [], gate_percentile=90.0)
    trainer = T.Trainer(genaffect, settings)
    d = T.concatenate([load(args.readings, s) for s in posed + wild])
    posed_rows = np.flatnonzero(np.isin(d["source"], posed))
    wild_held_out = np.isin(d["source"], wild) & np.array([T.held_out(p) for p in d["person"]], dtype=bool)
    trainable = np.flatnonzero(~wild_held_out) if args.far else posed_rows
    only = set(args.only.split(","))
    network = None
    if args.network:
        from genaffect.models.expression.expression_network import load_expression_network
        from genaffect.models.files.onnx_providers import choose_providers

        network = load_expression_network(args.network, choose_providers("CPU"))
    out = {"copy checks": {}, "expression copied": {}, "select best": {}, "pixel judge": {}}
    rng = np.random.default_rng(0)
    for source in posed + wild if only & {"copies", "copied", "pools", "network"} else []:
        test = np.flatnonzero((d["source"] == source) & (wild_held_out | (not args.far) | (source in posed)))
        judge = trainer.train(d, np.setdiff1d(trainable, np.flatnonzero(d["source"] == source) if source in posed
                                              else test))
        part = T.take(d, test)
        if "copies" in only:
            out["copy checks"][source] = copy_checks(genaffect, judge, part, rng)
        if "copied" in only:
            # COPIED_PROBABILITY was chosen on the posed sources' other half of the people
            measured = np.array([source not in posed or measured_half(p) for p in part["person"]], dtype=bool)
            out["expression copied"][source] = expression_copied(genaffect, judge, part, np.flatnonzero(measured))
        if "pools" in only:
            out["select best"][source] = select_best_pools(genaffect, judge, part, np.arange(len(test)), rng,
                                                           args.pools, half=source in posed, network=network)
        if "network" in only and args.network:
            out["pixel judge"][source] = pixel_judge(genaffect, judge, part, network)
        print(source, json.dumps({k: out[k].get(source) for k in out}, indent=1), flush=True)
    if args.copies:
        out["copy hits"] = copy_hits(genaffect, trainer.train(d, trainable), args.copies)
        print(json.dumps(out["copy hits"], indent=1))
    with open(args.json, "w") as handle:
        json.dump(out, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
