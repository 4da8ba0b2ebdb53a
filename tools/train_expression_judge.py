"""Train and evaluate GenAffect's landmark expression judge on labelled photos; write models/data/expression_judge.npz.

    python tools/train_expression_judge.py --readings DIR [--posed jaffe,taiwan,kdef] [--unseen yale] [--wild muxspace]
    python tools/train_expression_judge.py --readings DIR --evaluate-only     # numbers, no file written

Nothing is downloaded. DIR holds one ``readings_<source>.npz`` per source of labelled photos, made by
``tools/read_labelled_photos.py`` (the pack's own estimator and face analyzer on PHOTOS/<expression>/<person>/...):
per photo MediaPipe's 478 landmarks (normalised), 52 blendshapes, the image size, and the label and person. Photos
are never needed here, and never committed.

What it does, with the runtime's own code (``models/evaluation/expression_judge.py``) for every feature and every
prediction, so the numbers are the shipped judge's:

- **geometry**: the 60 landmarks that move least within a person across expressions (after aligning on all, three
  rounds) are the rigid set the pose is fitted on; the template is the Procrustes mean of the neutral faces;
- **relative head**: a face aligned onto a reference photo of the same person (on the rigid set) minus that photo,
  over the 468 mesh points, in 3-D; trained on each photo with up to ``--refs`` of the person's neutral photos;
- **alone head**: the face's own pose-normalised shape minus the template, for when no reference is known;
- a multinomial logistic regression (class-balanced, L2 ``--C``) on standardised features, trained on the
  posed sources (``--posed``) together, left-right mirrored copies of every pair added (``--mirror``);
- ``--read-mirrored``: the judge reads every face relative to its photo as seen and in a mirror, and averages the
  two (a setting of the file, so the evaluation below reads that way too).

Evaluation (written into the file's ``meta`` and printed as Markdown for docs/judge.md), always on people never
used for training, beside the nearest-target rule (Face Metrics' old rule: nearest calibrated estimator-space
target in blendshape L1): (1) person-disjoint 5-fold over the posed sources pooled, per source; (2) each posed
source left out of training; (3) ``--unseen`` posed sources never trained on (their classes only); (4) the
``--wild`` source (in the wild), never trained on. Each protocol refits the geometry and the model on its training
people only. Per class recall, macro (the mean of the recalls) and the confusion matrix.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # BLAS threads fight each other on small machines

import argparse
import datetime
import json
import sys
import zlib

import numpy as np

from pack_loader import PACK_DIR, import_pack

CLASSES = ("neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted")
OUTPUT = os.path.join(PACK_DIR, "models", "data", "expression_judge.npz")
RIGID_COUNT = 60
MESH = 468  # the face mesh; the 10 iris points follow the gaze, not the expression
DECIMALS = 5
HELD_OUT_FOLDS = 5  # a wild source's people with crc32("source:person") % 5 == 0 are never trained on nor tuned on


def held_out(person: str) -> bool:
    """The wild source's held-out people (about a fifth): never trained on, never looked at to choose a setting."""
    return zlib.crc32(person.encode()) % HELD_OUT_FOLDS == 0


# ------------------------------------------------------------------------------------------------------ data
def load_source(directory: str, source: str) -> dict:
    path = os.path.join(directory, f"readings_{source}.npz")
    with np.load(path, allow_pickle=False) as data:
        d = {key: data[key] for key in ("landmarks", "blendshapes", "image_hw", "label", "person", "photo")}
        d["rated"] = data["rated"] if "rated" in data.files else d["label"]
    read = np.isfinite(d["landmarks"][:, 0, 0])
    d = {key: value[read] for key, value in d.items()}
    d["source"] = np.array([source] * len(d["label"]))
    d["person"] = np.array([f"{source}:{p}" for p in d["person"]])
    return d


def concatenate(parts: list[dict]) -> dict:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def take(d: dict, rows: np.ndarray) -> dict:
    return {key: value[rows] for key, value in d.items()}


# -------------------------------------------------------------------------------------------------- geometry
def fit_template(judge_module, pixels: np.ndarray, rigid: np.ndarray, rounds: int = 4) -> np.ndarray:
    """Generalised Procrustes mean (on the rigid points), centred, rigid RMS radius 1."""
    template = pixels[0].copy()
    for _ in range(rounds):
        template = judge_module.align(pixels, template, rigid).mean(axis=0)
        centre = template[rigid].mean(axis=0)
        template = (template - centre) / np.sqrt(((template[rigid] - centre) ** 2).sum(axis=1).mean())
    return template


def pick_rigid(judge_module, pixels: np.ndarray, person: np.ndarray, count: int = RIGID_COUNT) -> np.ndarray:
    """The landmarks that move least within a person across photos, after aligning on the previous choice."""
    rigid = np.arange(MESH)
    people, inverse = np.unique(person, return_inverse=True)
    for _ in range(3):
        aligned = judge_module.align(pixels, fit_template(judge_module, pixels, rigid, 3), rigid)[:, :MESH]
        spread, used = np.zeros(MESH), 0
        for k in range(len(people)):
            faces = aligned[inverse == k]
            if len(faces) > 1:
                spread += np.sqrt(((faces - faces.mean(axis=0)) ** 2).sum(axis=-1)).mean(axis=0)
                used += 1
        rigid = np.sort(np.argsort(spread / max(used, 1))[:count])
    return rigid


def pairs(d: dict, rows: np.ndarray, refs: int, rng, evaluation: bool, any_reference: bool = False) -> np.ndarray:
    """(photo, reference) rows of one person, never a photo with itself; references are the person's neutral
    photos. For evaluation one reference per photo: the person's first other neutral photo in file order
    (``any_reference``: a random other photo of another, non-neutral expression: a smiling reference photo)."""
    by_person: dict[str, list[int]] = {}
    for i in rows:
        by_person.setdefault(d["person"][i], []).append(int(i))
    out = []
    for members in by_person.values():
        members.sort(key=lambda i: d["photo"][i])
        neutral = [i for i in members if d["label"][i] == "neutral"]
        for i in members:
            if any_reference and evaluation:
                others = [j for j in members if d["label"][j] not in ("neutral", d["label"][i])]
                if others:
                    out.append((i, int(rng.choice(others))))
                continue
            others = [j for j in (members if any_reference else neutral) if j != i]
            if not others:
                continue
            chosen = others[:1] if evaluation else (others if len(others) <= refs
                                                    else list(rng.choice(others, refs, replace=False)))
            out.extend((i, j) for j in chosen)
    return np.array(out, dtype=int).reshape(-1, 2)


# ----------------------------------------------------------------------------------------------------- model
class Trainer:
    def __init__(self, genaffect, args):
        self.J = genaffect.models.evaluation.expression_judge
        self.args = args
        # what is evaluated: relative to a neutral photo, relative to a photo of another expression (how the judge
        # fares when the reference photo is not neutral), and alone
        self.heads = ("relative", "any reference", "alone")

    def geometry(self, d: dict, rows: np.ndarray):
        pixels = self.J.to_pixels(d["landmarks"][rows], d["image_hw"][rows])
        rigid = pick_rigid(self.J, pixels, d["person"][rows])
        neutral = d["label"][rows] == "neutral"
        return fit_template(self.J, pixels[neutral], rigid), rigid

    def empty_judge(self, template, rigid):
        meta = {"format": self.J.FORMAT, "classes": list(CLASSES), "read_mirrored": self.args.read_mirrored}
        heads = {"relative": self.J.Head(("delta",), None, None, ()), "alone": self.J.Head(("shape",), None, None, ())}
        return self.J.LandmarkJudge(meta, template, rigid, np.arange(MESH), heads)

    def features(self, judge, head: str, d: dict, pair: np.ndarray, mirror: bool = False) -> np.ndarray:
        faces = judge.canonical(d["landmarks"][pair[:, 0]], d["image_hw"][pair[:, 0]])
        references = None
        if head != "alone":
            references = judge.canonical(d["landmarks"][pair[:, 1]], d["image_hw"][pair[:, 1]])
        if mirror:
            faces = judge.mirrored(faces)
            references = None if references is None else judge.mirrored(references)
        return judge.features("relative" if head == self.J.FAR_HEAD else head, faces, references)  # same parts

    def fit_head(self, judge, head: str, d: dict, pair: np.ndarray, labels: np.ndarray, groups=None):
        """``groups`` (bool per pair, e.g. the wild photos): the two groups weigh the same, each class-balanced."""
        x = self.features(judge, head, d, pair)
        y = labels
        groups = np.zeros(len(y), bool) if groups is None else groups
        if self.args.mirror:
            x = np.vstack([x, self.features(judge, head, d, pair, mirror=True)])
            y, groups = np.concatenate([y, y]), np.concatenate([groups, groups])
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        x = (x - mean) / scale
        if head != "alone" and self.args.hidden:
            layers = self.fit_network(x, y, balanced_weights(y, groups))
        else:
            layers = self.fit_linear(x, y)
        return self.J.Head(judge.heads["relative" if head == self.J.FAR_HEAD else head].parts, mean, scale, layers)

    def fit_linear(self, x: np.ndarray, y: np.ndarray):
        """Multinomial logistic regression, class-balanced: one dense layer."""
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=self.args.C, class_weight="balanced", max_iter=5000).fit(x, y)
        weights = np.zeros((x.shape[1], len(CLASSES)))
        bias = np.full(len(CLASSES), -1e3)  # a class absent from training is never predicted
        weights[:, model.classes_] = model.coef_.T
        bias[model.classes_] = model.intercept_
        return ((weights, bias),)

    def fit_network(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray):
        """PCA to ``--pca`` components, then one ReLU layer of ``--hidden`` units (class-balanced sample weights,
        L2 ``--alpha``); the PCA folded into the first layer, so the runtime sees two dense layers."""
        from sklearn.decomposition import PCA
        from sklearn.neural_network import MLPClassifier

        pca = PCA(self.args.pca, random_state=0).fit(x)
        model = MLPClassifier((self.args.hidden,), alpha=self.args.alpha, max_iter=800, random_state=0)
        model.fit(pca.transform(x), y, sample_weight=weight)
        (w1, w2), (b1, b2) = model.coefs_, model.intercepts_
        first = (pca.components_.T @ w1, b1 - pca.mean_ @ pca.components_.T @ w1)
        weights = np.zeros((w2.shape[0], len(CLASSES)))
        bias = np.full(len(CLASSES), -1e3)
        weights[:, model.classes_] = w2
        bias[model.classes_] = b2
        return (first, (weights, bias))

    def train(self, d: dict, rows: np.ndarray):
        """A judge trained on ``rows``: the geometry, the relative and the alone heads on the posed photos among them;
        with ``--far``, the far head on all of them (the wild photos too) and the gate from the posed pairs."""
        rng = np.random.default_rng(0)
        wild = np.isin(d["source"][rows], self.args.wild_sources)
        posed = rows[~wild]
        template, rigid = self.geometry(d, posed)
        judge = self.empty_judge(template, rigid)
        labels = np.array([CLASSES.index(c) if c in CLASSES else -1 for c in d["label"]])
        relative = pairs(d, posed, self.args.refs, rng, evaluation=False)
        relative = relative[labels[relative[:, 0]] >= 0]
        alone = np.stack([posed, posed], axis=1)
        alone = alone[labels[alone[:, 0]] >= 0]
        heads = {"relative": self.fit_head(judge, "relative", d, relative, labels[relative[:, 0]]),
                 "alone": self.fit_head(judge, "alone", d, alone, labels[alone[:, 0]])}
        meta = dict(judge.meta)
        if self.args.far and wild.any():
            turned = self.turned(judge, d, relative)
            faces = judge.canonical(d["landmarks"][relative[:, 0]], d["image_hw"][relative[:, 0]])
            references = judge.canonical(d["landmarks"][relative[:, 1]], d["image_hw"][relative[:, 1]])
            meta["gate"] = {"turned_degrees": round(float(np.percentile(turned, self.args.gate_percentile)), 2),
                            "misfit": round(float(np.percentile(judge.misfit(faces, references),
                                                                self.args.gate_percentile)), 5)}
            every = pairs(d, rows, self.args.refs, rng, evaluation=False)
            every = every[labels[every[:, 0]] >= 0]
            groups = np.isin(d["source"][every[:, 0]], self.args.wild_sources)
            heads[self.J.FAR_HEAD] = self.fit_head(judge, self.J.FAR_HEAD, d, every, labels[every[:, 0]], groups)
        return self.J.LandmarkJudge(meta, template, rigid, judge.subset, heads)

    def turned(self, judge, d: dict, pair: np.ndarray) -> np.ndarray:
        """Degrees each photo's head is turned from its reference photo's (the runtime's measure)."""
        return self.J.turned_degrees(self.J.to_pixels(d["landmarks"][pair[:, 0]], d["image_hw"][pair[:, 0]]),
                                     self.J.to_pixels(d["landmarks"][pair[:, 1]], d["image_hw"][pair[:, 1]]),
                                     judge.rigid)

    def predict(self, judge, d: dict, rows: np.ndarray, head: str) -> tuple[np.ndarray, np.ndarray]:
        """(photo rows judged, predicted class indices): relative pairs each photo with its person's first other
        neutral photo (photos without one are left out); "any reference" pairs it with another photo of the person
        showing another, non-neutral expression; alone reads every photo."""
        if head == "alone":
            pair = np.stack([rows, rows], axis=1)
        else:
            pair = pairs(d, rows, 1, np.random.default_rng(1), evaluation=True, any_reference=head == "any reference")
        if not len(pair):
            return np.zeros(0, int), np.zeros(0, int)
        faces = judge.canonical(d["landmarks"][pair[:, 0]], d["image_hw"][pair[:, 0]])
        if head == "alone":
            probabilities = judge.head_probabilities("alone", faces, None)
        else:  # as the pack reads a face relative to a photo (the head chosen by the photo's own reading)
            references = judge.canonical(d["landmarks"][pair[:, 1]], d["image_hw"][pair[:, 1]])
            probabilities = judge.relative_probabilities(faces, references, self.turned(judge, d, pair))
        return pair[:, 0], probabilities.argmax(axis=1)


def balanced_weights(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Sample weights: within each group every class weighs the same; the groups weigh the same."""
    weight = np.ones(len(y))
    present = np.unique(groups)
    for group in present:
        members = groups == group
        classes = np.unique(y[members])
        for c in classes:
            weight[members & (y == c)] = members.sum() / (len(classes) * (members & (y == c)).sum())
        weight[members] *= len(y) / (len(present) * members.sum())
    return weight


def nearest_target(genaffect, blendshapes: np.ndarray) -> np.ndarray:
    """Face Metrics' old rule: the class whose calibrated estimator-space target is nearest in blendshape L1."""
    library = genaffect.models.expression.expression_library
    metrics = genaffect.models.evaluation.face_metrics
    targets = np.stack([library.estimator_target(c) for c in CLASSES])
    distances = np.stack([metrics.blendshape_l1(blendshapes, np.repeat(t[None], len(blendshapes), axis=0))
                          for t in targets], axis=1)
    return distances.argmin(axis=1)


# ------------------------------------------------------------------------------------------------ evaluation
def scores(truth: list[str], predicted: np.ndarray, classes=CLASSES) -> dict:
    """Confusion matrix over the classes present in the truth, per-class recall and macro."""
    present = [c for c in classes if c in set(truth)]
    matrix = np.zeros((len(present), len(CLASSES)), dtype=int)
    for t, p in zip(truth, predicted):
        matrix[present.index(t), p] += 1
    recall = {c: round(float(matrix[i, CLASSES.index(c)] / matrix[i].sum()), 4) for i, c in enumerate(present)}
    return {"photos": int(matrix.sum()), "classes": present, "recall": recall,
            "macro": round(float(np.mean(list(recall.values()))), 4), "confusion": matrix.tolist()}


def evaluate(trainer: Trainer, genaffect, d: dict, train_rows: np.ndarray, test_rows: np.ndarray, what: str,
             judge=None) -> dict:
    """Train on ``train_rows`` (or take ``judge``), judge ``test_rows``; scored against the sources' labels and,
    where they differ (taiwan: the observers' majority reading), against ``rated`` too."""
    judge = judge or trainer.train(d, train_rows)
    predictions = {}
    for head in trainer.heads:
        predictions[head] = trainer.predict(judge, d, test_rows, head)
    judged = predictions["relative"][0]
    predictions["nearest_target"] = (judged, nearest_target(genaffect, d["blendshapes"][judged]))
    out = {"what": what, "train_people": len(set(d["person"][train_rows])),
           "test_people": len(set(d["person"][test_rows]))}
    out.update(score_all(d, predictions))
    return out


def score_all(d: dict, predictions: dict, source=None) -> dict:
    """Scores of the judged photos (of ``source``: a name, or a list of names pooled; None: all)."""
    out = {}
    for labels, suffix in (("label", ""), ("rated", " (observers)")):
        for head, (judged, predicted) in predictions.items():
            keep = np.isin(d[labels][judged], CLASSES)
            if source is not None:
                keep &= np.isin(d["source"][judged], source)
            if suffix and np.array_equal(d["rated"][judged][keep], d["label"][judged][keep]):
                continue
            out[head + suffix] = scores(list(d[labels][judged][keep]), predicted[keep])
    return out


def cross_validate(trainer, genaffect, d, rows, pooled: list[str], folds=5) -> dict:
    """Person-disjoint folds: every photo judged by a model that never saw its person; scored over the ``pooled``
    sources together ("all") and per source."""
    from sklearn.model_selection import GroupKFold

    collected = {head: ([], []) for head in (*trainer.heads, "nearest_target")}
    for train, test in GroupKFold(folds).split(rows, groups=d["person"][rows]):
        judge = trainer.train(d, rows[train])
        for head in trainer.heads:
            judged, predicted = trainer.predict(judge, d, rows[test], head)
            collected[head][0].append(judged)
            collected[head][1].append(predicted)
            if head == "relative":
                collected["nearest_target"][0].append(judged)
                collected["nearest_target"][1].append(nearest_target(genaffect, d["blendshapes"][judged]))
    predictions = {head: (np.concatenate(a), np.concatenate(b)) for head, (a, b) in collected.items()}
    return {source: {"what": f"person-disjoint {folds}-fold, {source}",
                     **score_all(d, predictions, pooled if source == "all" else source)}
            for source in ["all", *sorted(set(d["source"][rows]))]}


def markdown(entry: dict) -> str:
    """The entry's tables: relative to a neutral photo (and against the observers' readings where they differ),
    relative to a photo of another expression when measured, and the face alone."""
    return "\n".join(_table(entry, head) for head in ("relative", "relative (observers)", "any reference", "alone")
                     if head in entry)


def _table(entry: dict, head: str) -> str:
    s = entry[head]
    rule = {"relative": "nearest_target", "relative (observers)": "nearest_target (observers)"}.get(head)
    short = [c[:4] for c in CLASSES]
    lines = [f"{entry['what']} — {head}: macro {100 * s['macro']:.1f} % over {s['photos']} photos"
             + (f" (nearest-target rule {100 * entry[rule]['macro']:.1f} %)" if rule in entry else ""),
             "", "| true \\ read | " + " | ".join(short) + " | recall |", "|---" * (len(CLASSES) + 2) + "|"]
    for c, row in zip(s["classes"], s["confusion"]):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + f" | {100 * s['recall'][c]:.0f} % |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", help="folder of readings_<source>.npz")
    parser.add_argument("--markdown", help="print the evaluation stored in a judge file as Markdown tables, and stop")
    parser.add_argument("--posed", default="jaffe,taiwan,kdef", help="posed sources: trained on, each also left out")
    parser.add_argument("--unseen", default="yale", help="posed sources never trained on (any subset of the classes)")
    parser.add_argument("--wild", default="muxspace", help="an in-the-wild source: never trained on, or with --far "
                        "trained on but for its held-out people (crc32 of 'source:person' % 5 == 0)")
    parser.add_argument("--far", action="store_true", help="train the far head (faces turned from their reference "
                        "photo beyond the gate) on the posed and the wild source's photo pairs, the two weighing the same")
    parser.add_argument("--gate-percentile", type=float, default=90.0, help="the gate: this percentile of how far "
                        "the heads turn, and of the rigid landmarks' misfit, in the posed training pairs")
    parser.add_argument("--provenance", help="a JSON file describing the sources (copied into the judge file)")
    parser.add_argument("--C", type=float, default=0.1)
    parser.add_argument("--refs", type=int, default=3, help="reference photos per training photo")
    parser.add_argument("--mirror", action="store_true", help="add left-right mirrored copies to training")
    parser.add_argument("--read-mirrored", action="store_true", help="the judge reads every face relative to its "
                        "photo as seen and in a mirror, and averages the two (written into the file; the evaluation "
                        "reads that way too)")
    parser.add_argument("--hidden", type=int, default=0, help="relative head: a ReLU layer of this many units after "
                        "a PCA (0: logistic regression)")
    parser.add_argument("--pca", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=1.0, help="the hidden layer's L2 penalty")
    parser.add_argument("--output", default=OUTPUT)
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--golden", default="yale:3", help="SOURCE:PEOPLE whose readings and predictions become the "
                        "tests' golden data ('' for none)")
    parser.add_argument("--golden-output", default=os.path.join(PACK_DIR, "tests", "data",
                                                                "expression_judge_golden.npz"))
    parser.add_argument("--skip", default="", help="protocols to skip: cv,loso,unseen,wild")
    parser.add_argument("--keep-evaluation", action="store_true", help="keep the protocols of the judge file at "
                        "--output that this run skips (the same settings and sources give the same judge)")
    args = parser.parse_args(argv)
    if args.markdown:
        with np.load(args.markdown, allow_pickle=False) as data:
            evaluation = json.loads(str(data["meta"]))["evaluation"]
        for protocol in evaluation.values():
            for entry in protocol.values():
                print(markdown(entry))
        return 0
    if not args.readings:
        parser.error("--readings is needed to train or evaluate")

    genaffect = import_pack()
    args.wild_sources = [args.wild] if args.far and args.wild else []
    trainer = Trainer(genaffect, args)
    posed = [s for s in args.posed.split(",") if s]
    others = [s for s in (args.unseen.split(",") + [args.wild]) if s and os.path.exists(
        os.path.join(args.readings, f"readings_{s}.npz"))]
    d = concatenate([load_source(args.readings, s) for s in posed + others])
    posed_rows = np.flatnonzero(np.isin(d["source"], posed))
    # with --far the wild source's people are trained on too, all but its held-out fifth (the wild test)
    wild_rows = np.flatnonzero(np.isin(d["source"], args.wild_sources))
    wild_test = np.array([held_out(p) for p in d["person"][wild_rows]], dtype=bool)
    wild_train, wild_rows = wild_rows[~wild_test], wild_rows[wild_test]
    trained_rows = np.concatenate([posed_rows, wild_train])
    also = f" and {args.wild} (but its held-out people)" if len(wild_train) else ""
    skip = set(args.skip.split(","))
    evaluation: dict = {}
    if "cv" not in skip:
        evaluation["person_disjoint"] = cross_validate(trainer, genaffect, d, trained_rows, posed)
        for entry in evaluation["person_disjoint"].values():
            print(markdown(entry), flush=True)
    if "loso" not in skip:
        evaluation["source_left_out"] = {}
        for source in posed:
            test = np.flatnonzero(d["source"] == source)
            train = np.setdiff1d(trained_rows, test)
            entry = evaluate(trainer, genaffect, d, train, test, f"trained on {', '.join(p for p in posed if p != source)}"
                             f"{also}, tested on {source}")
            evaluation["source_left_out"][source] = entry
            print(markdown(entry), flush=True)
    final = trainer.train(d, trained_rows)
    for source in others:
        if ("wild" if source == args.wild else "unseen") in skip:
            continue
        test = np.flatnonzero(d["source"] == source)
        if source in args.wild_sources:
            test = wild_rows
        entry = evaluate(trainer, genaffect, d, trained_rows, test, f"trained on {', '.join(posed)}{also}, tested on "
                         f"{source}" + (" (in the wild)" if source == args.wild else "")
                         + (", its held-out people" if source in args.wild_sources else ""), judge=final)
        evaluation.setdefault("never_trained_on", {})[source] = entry
        print(markdown(entry), flush=True)
    if args.evaluate_only:
        return 0
    if args.keep_evaluation and os.path.exists(args.output):
        with np.load(args.output, allow_pickle=False) as data:
            kept = json.loads(str(data["meta"]))["evaluation"]
        for protocol, entries in kept.items():
            evaluation.setdefault(protocol, {})
            for name, entry in entries.items():
                evaluation[protocol].setdefault(name, entry)
    write(final, d, trained_rows, posed + args.wild_sources, args, evaluation)
    final = trainer.J.LandmarkJudge.from_file(args.output)  # what ships, read back as the pack reads it
    if args.golden:
        source, _, people = args.golden.partition(":")
        write_golden(final, trainer, d, source, int(people or 3), args.golden_output)
    return 0


def write_golden(judge, trainer: Trainer, d: dict, source: str, people: int, path: str) -> None:
    """A few real readings of a source the judge never trained on, with what the judge reads on them (relative
    to each person's neutral photo, and alone): numbers only, for the tests' golden predictions."""
    rows = np.flatnonzero(d["source"] == source)
    chosen = [p for p in dict.fromkeys(d["person"][rows])][:people]
    rows = np.array([i for i in rows if d["person"][i] in chosen and d["label"][i] in CLASSES])
    pair = pairs(d, rows, 1, None, evaluation=True)
    neutral = {d["person"][i]: j for i, j in pair}
    reference = np.array([neutral.get(d["person"][i], -1) for i in rows])
    relative = np.stack([judge.read_landmarks(d["landmarks"][[i]], d["image_hw"][[i]], d["landmarks"][j],
                                              d["image_hw"][j]).probabilities[0] if j >= 0
                         else np.full(len(CLASSES), np.nan) for i, j in zip(rows, reference)])
    alone = judge.read_landmarks(d["landmarks"][rows], d["image_hw"][rows]).probabilities
    np.savez_compressed(path, landmarks=d["landmarks"][rows].astype(np.float32),
                        image_size=d["image_hw"][rows].astype(np.float32), labels=d["label"][rows],
                        person=d["person"][rows], reference=np.array([list(rows).index(j) if j >= 0 else -1
                                                                      for j in reference]),
                        relative=relative.astype(np.float32), alone=alone.astype(np.float32),
                        classes=np.array(CLASSES), source=np.array(source))
    print(f"wrote {path}: {len(rows)} readings of {source}")


def write(judge, d: dict, rows: np.ndarray, posed: list[str], args, evaluation: dict) -> None:
    provenance = {}
    if args.provenance:
        with open(args.provenance, encoding="utf-8") as handle:
            provenance = json.load(handle)
    trained = {source: {"photos": int((d["source"][rows] == source).sum()),
                        "people": len(set(d["person"][rows][d["source"][rows] == source]))} for source in posed}
    meta = {
        "format": judge.meta["format"], "version": 1, "created": datetime.date.today().isoformat(),
        "classes": list(CLASSES),
        "heads": {name: {"parts": list(head.parts)} for name, head in judge.heads.items()},
        "settings": {"rigid_landmarks": RIGID_COUNT, "mesh": MESH,
                     "relative_model": (f"PCA {args.pca} + one ReLU layer of {args.hidden} units (alpha {args.alpha}), "
                                        "class-balanced" if args.hidden else
                                        f"multinomial logistic regression, class-balanced, C {args.C}"),
                     "alone_model": f"multinomial logistic regression, class-balanced, C {args.C}",
                     **({"far_model": f"as the relative head, trained on the posed and {', '.join(args.wild_sources)}'s "
                                      "photo pairs, the two weighing the same, each class-balanced; used beyond the "
                                      f"gate: the {args.gate_percentile:g}th percentile of how far the heads turn, or "
                                      "of the rigid landmarks' misfit, in the posed training pairs"} if args.wild_sources else {}),
                     "references_per_photo": args.refs, "mirror": args.mirror,
                     "labels": "performed (the sources' own labels)"},
        **({"gate": judge.meta["gate"]} if "gate" in judge.meta else {}),
        "read_mirrored": judge.read_mirrored,
        "trained_on": trained,
        **({"held_out": f"{', '.join(args.wild_sources)}: the people with crc32('source:person') % "
                        f"{HELD_OUT_FOLDS} == 0, never trained on (the wild test)"} if args.wild_sources else {}),
        "provenance": provenance,
        "evaluation": evaluation,
        "written_by": "tools/train_expression_judge.py",
    }
    arrays = {"meta": np.array(json.dumps(meta)), "template": judge.template.astype(np.float32),
              "rigid": judge.rigid.astype(np.int16), "subset": judge.subset.astype(np.int16)}
    for name, head in judge.heads.items():
        arrays[f"{name}_mean"] = head.mean.astype(np.float32)
        arrays[f"{name}_scale"] = head.scale.astype(np.float32)
        for i, (weights, bias) in enumerate(head.layers):
            # float16 keeps the file small; the judge computes in float64 (probabilities move by < 1e-3)
            arrays[f"{name}_w{i}"] = weights.astype(np.float16 if weights.size > 100_000 else np.float32)
            arrays[f"{name}_b{i}"] = bias.astype(np.float32)
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes)")


if __name__ == "__main__":
    sys.exit(main())
