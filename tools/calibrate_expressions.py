"""Calibrate the expression presets in the estimator's own space, on labelled photos.

    python tools/calibrate_expressions.py --photos PHOTOS/ --landmarker ComfyUI/models/mediapipe/face_landmarker.task
    python tools/calibrate_expressions.py --rederive      # no photos: refresh the presets without photos

PHOTOS/ holds one folder per preset name (neutral/, happy/, sad/, fearful/, angry/, surprised/, disgusted/, ...)
with photos of that expression, either directly (each photo is its own person) or in one sub-folder per person
(``<expression>/<person>/<files>``; the same person's folder name under several expressions is one person). An
optional PHOTOS/provenance.json (any JSON: where the photos come from, their licence) is copied into the output.
Nothing is downloaded.

Every photo goes through the pack's own estimator (``models/expression/expression_estimator.py``: MediaPipe's face
landmarker, the largest face); faces narrower than ``--min-face`` pixels are skipped. Written to
``models/data/estimator_targets.json``:

- per preset with photos of at least ``--min-people-per-preset`` people, its **estimator-space target**: the
  per-blendshape median over the people of each person's median reading. The median is the vector that minimises the mean absolute (L1) difference to the
  readings, which is the error Face Metrics reports; it ignores a minority of mislabelled photos and misreads
  that would pull a mean; taking each person's median first lets every person count once, however many photos
  they have. With the number of photos and people used.
- the **readable blendshapes**: a movement blendshape is readable when at least ``--min-photos`` photos of at
  least ``--min-people`` people read it ``--threshold`` or more above the neutral face's reading (the neutral
  target; 0 without neutral photos). The others never move meaningfully on real faces, whatever the face does.
- per readable blendshape a **gain**: the estimator's reading per unit of recipe, fitted (least squares through
  the neutral reading) over the photo-calibrated presets whose recipe drives it; 1 where no calibrated recipe
  drives it (no evidence), 0 for unreadable ones. Presets without photos get the neutral reading plus the
  recipe times the gains on the readable blendshapes (``expression_library.derive_estimator_target``) and are
  marked ``photo_calibrated: false``.
- an evaluation: per compared preset (``--compare``, default every calibrated one) the blendshape L1 (over the
  readable blendshapes) of the photos to the old target (the recipe's blendshapes) and to the new one, and the
  share of photos nearer their own target than every other compared preset's, the new targets computed
  leaving the photo's person out (all of that person's photos, under every expression), so no photo is scored
  against a target it helped make. (The readable list itself is taken from all photos.)

``--cache readings.npz`` keeps the photos' readings, so a re-run with other rules skips the estimator.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass

import numpy as np
from pack_loader import PACK_DIR, import_pack

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_OUTPUT = os.path.join(PACK_DIR, "models", "data", "estimator_targets.json")
MIN_FACE = 100  # pixels across the face's landmarks
THRESHOLD = 0.1  # a tenth of the blendshape scale above the neutral reading
MIN_PHOTOS = 3
MIN_PEOPLE = 2
MIN_PEOPLE_PER_PRESET = 5  # fewer people than this: the preset keeps the rule for presets without photos
DECIMALS = 4


@dataclass
class Photo:
    expression: str
    person: str
    path: str


def find_photos(root: str, preset_names) -> list[Photo]:
    """``<root>/<expression>/[<person>/]<files>``, sorted; expression folders must be preset names."""
    if not os.path.isdir(root):
        raise SystemExit(f"{root} is not a folder of <expression>/ folders.")
    photos = []
    for expression in sorted(os.listdir(root)):
        folder = os.path.join(root, expression)
        if not os.path.isdir(folder):
            continue
        if expression not in preset_names:
            raise SystemExit(f"{folder}: {expression!r} is not a preset name; name each folder after a preset "
                             f"({', '.join(preset_names)}).")
        for directory, folders, files in os.walk(folder):
            folders.sort()
            for name in sorted(files):
                if not name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                relative = os.path.relpath(directory, folder)
                person = os.path.splitext(name)[0] if relative == "." else relative.split(os.sep)[0]
                photos.append(Photo(expression, person, os.path.join(directory, name)))
    if not photos:
        raise SystemExit(f"no photos under {root}/<expression>/ ({', '.join(IMAGE_EXTENSIONS)}).")
    return photos


def measure_photos(photos: list[Photo], estimator, min_face: int = MIN_FACE, on_progress=None):
    """(readings (M, 52), the photos they belong to, {reason: count} of the photos skipped, the files that are not
    readable images)."""
    from genaffect.models.errors import GenAffectInputError, NoFaceFoundError
    from genaffect.models.expression.expression_estimator import estimate_expressions
    from genaffect.models.images import read_photo

    readings, kept, skipped, unreadable = [], [], {}, []

    def skip(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    for count, photo in enumerate(photos, 1):
        try:
            rgb = read_photo(photo.path)
        except GenAffectInputError as error:  # damaged, not an image, or a decompression bomb: said, and go on
            print(f"skipped: {error}", file=sys.stderr)
            skip("unreadable image file")
            unreadable.append(photo.path)
            continue
        try:
            estimation = estimate_expressions(estimator, [rgb], on_no_face="skip")
        except NoFaceFoundError:
            skip("no face found")
            continue
        landmarks = estimation.expression.landmarks[0]
        width = float(landmarks[:, 0].max() - landmarks[:, 0].min()) * rgb.shape[1]
        if width < min_face:
            skip(f"face narrower than {min_face} px")
            continue
        readings.append(estimation.expression.blendshapes[0])
        kept.append(photo)
        if on_progress is not None:
            on_progress(count, len(photos))
    return np.array(readings, dtype=np.float32).reshape(-1, 52), kept, skipped, unreadable


def person_median(readings: np.ndarray, persons: list[str]) -> np.ndarray:
    """The per-blendshape median over people of each person's median reading."""
    groups = {}
    for row, person in enumerate(persons):
        groups.setdefault(person, []).append(row)
    per_person = [np.median(readings[groups[person]], axis=0) for person in sorted(groups)]
    return np.median(np.stack(per_person), axis=0).astype(np.float32)


def readable_names(readings: np.ndarray, persons: list[str], neutral: np.ndarray, threshold: float = THRESHOLD,
                   min_photos: int = MIN_PHOTOS, min_people: int = MIN_PEOPLE) -> list[str]:
    from genaffect.models.expression.batch import BLENDSHAPE_NAMES

    moved = readings >= neutral[None] + threshold
    names = []
    for index, name in enumerate(BLENDSHAPE_NAMES):
        if index == 0:  # "_neutral" is not a movement
            continue
        rows = np.nonzero(moved[:, index])[0]
        if len(rows) >= min_photos and len({persons[i] for i in rows}) >= min_people:
            names.append(name)
    return names


def fit_gains(targets: dict[str, np.ndarray], recipes: dict[str, np.ndarray], neutral: np.ndarray,
              readable_indices: np.ndarray) -> np.ndarray:
    """(52,) gains: least squares of (target - neutral) on the recipe, through the origin, over the calibrated
    presets whose recipe drives the blendshape; 1 without such a preset; 0 off the readable blendshapes."""
    gains = np.zeros(len(neutral), np.float32)
    for index in readable_indices:
        pairs = [(recipes[n][index], targets[n][index] - neutral[index]) for n in targets if recipes[n][index] > 0]
        if not pairs:
            gains[index] = 1.0
            continue
        recipe, reading = np.array(pairs, np.float64).T
        gains[index] = max(0.0, float((recipe * reading).sum() / (recipe * recipe).sum()))
    return gains


def _l1(readings: np.ndarray, target: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Face Metrics' expression error of each reading to one target, over the readable blendshapes measured."""
    from genaffect.models.evaluation.face_metrics import blendshape_l1

    return blendshape_l1(readings, np.asarray(target)[None], indices)


def person_left_out_targets(readings: np.ndarray, kept: list[Photo], expressions: list[str]):
    """({expression: target from everyone}, {person: {expression: target without that person, None where no one
    else showed it}})."""
    groups = {}  # (expression, person) -> rows
    for i, photo in enumerate(kept):
        groups.setdefault((photo.expression, photo.person), []).append(i)
    cells = {}  # expression -> (its people in order, their median readings of it)
    for expression in expressions:
        people = sorted(p for e, p in groups if e == expression)
        medians = np.stack([np.median(readings[groups[expression, person]], axis=0) for person in people])
        cells[expression] = ({person: k for k, person in enumerate(people)}, medians)
    full = {e: np.median(cells[e][1], axis=0) for e in expressions}

    def without(person):
        targets = {}
        for e, (people, medians) in cells.items():
            if person not in people:
                targets[e] = full[e]
                continue
            rest = np.delete(medians, people[person], axis=0)
            targets[e] = np.median(rest, axis=0) if len(rest) else None  # no one else: no held-out target
        return targets

    return full, {person: without(person) for person in sorted({p.person for p in kept})}


def evaluate(readings: np.ndarray, kept: list[Photo], old: dict[str, np.ndarray], indices: np.ndarray) -> dict:
    """Per preset of ``old`` (the recipes of the presets compared): L1 to the old and to the person-left-out new
    target, and the nearest-expression rates among those presets."""
    kept_rows = [i for i, p in enumerate(kept) if p.expression in old]
    readings, kept = readings[kept_rows], [kept[i] for i in kept_rows]
    expressions = sorted({p.expression for p in kept}, key=list(old).index)
    persons = [p.person for p in kept]
    full, held_out = person_left_out_targets(readings, kept, expressions)
    old_rows = np.stack([old[e] for e in expressions])
    result = {}
    for e in expressions:
        rows = [i for i, p in enumerate(kept) if p.expression == e]
        l1_old, l1_new, near_old, near_new = [], [], [], []
        for i in rows:
            targets = held_out[persons[i]]
            reading = readings[i:i + 1]
            old_distances = [float(_l1(reading, old_rows[j], indices)[0]) for j in range(len(expressions))]
            own = expressions.index(e)
            l1_old.append(old_distances[own])
            near_old.append(all(old_distances[own] < d for j, d in enumerate(old_distances)
                                if j != own and not np.array_equal(old_rows[j], old_rows[own])))
            if targets[e] is None:
                continue
            new_distances = {x: float(_l1(reading, t, indices)[0]) for x, t in targets.items() if t is not None}
            l1_new.append(new_distances[e])
            near_new.append(all(new_distances[e] < d for x, d in new_distances.items() if x != e))
        result[e] = {
            "photos": len(rows),
            "people": len({persons[i] for i in rows}),
            "l1_old": round(float(np.mean(l1_old)), DECIMALS),
            "l1_new_person_left_out": round(float(np.mean(l1_new)), DECIMALS) if l1_new else None,
            "l1_new_in_sample": round(float(np.mean(_l1(readings[rows], full[e], indices))), DECIMALS),
            "nearest_rate_old": round(float(np.mean(near_old)), DECIMALS),
            "nearest_rate_new_person_left_out": round(float(np.mean(near_new)), DECIMALS) if near_new else None,
            "photos_scored_new": len(l1_new),
        }
    return result


def _recipes() -> dict[str, np.ndarray]:
    from genaffect.models.expression.expression_library import blendshapes_from_aus, library

    return {name: blendshapes_from_aus(entry.aus, name) for name, entry in library().items()}


def _vector(values: np.ndarray) -> list[float]:
    return [round(float(v), DECIMALS) for v in values]


def derived_targets(data: dict) -> dict:
    """The targets of the presets without photos, from the recipes and the file's gains (a fresh dict)."""
    from genaffect.models.expression.batch import BLENDSHAPE_INDEX, NUM_BLENDSHAPES
    from genaffect.models.expression.expression_library import derive_estimator_target

    recipes = _recipes()
    stored = data.get("targets", {})
    calibrated = {n: np.array(e["blendshapes"], np.float32) for n, e in stored.items() if e.get("photo_calibrated")}
    neutral = calibrated.get("neutral", np.zeros(NUM_BLENDSHAPES, np.float32))
    indices = np.array([BLENDSHAPE_INDEX[n] for n in data["readable"]["names"]], dtype=np.int64)
    gains = np.zeros(NUM_BLENDSHAPES, np.float32)
    for name, gain in data["gains"].items():
        gains[BLENDSHAPE_INDEX[name]] = gain
    targets = {}
    for name, recipe in recipes.items():
        if name in calibrated:
            targets[name] = stored[name]
        else:
            targets[name] = {"blendshapes": _vector(derive_estimator_target(recipe, neutral, gains, indices)),
                             "photo_calibrated": False}
    return targets


def held_out_rule_check(targets: dict[str, np.ndarray], readings, kept, neutral, indices) -> dict:
    """How the rule for presets without photos does on the calibrated ones: each preset's target derived from
    gains fitted on the other presets, its photos' L1 to that, beside the L1 to the recipe."""
    from genaffect.models.expression.expression_library import derive_estimator_target

    recipes = _recipes()
    check = {}
    for name in targets:
        if name == "neutral":
            continue
        others = {n: t for n, t in targets.items() if n not in (name, "neutral")}
        gains = fit_gains(others, recipes, neutral, indices)
        derived = derive_estimator_target(recipes[name], neutral, gains, indices)
        rows = [i for i, p in enumerate(kept) if p.expression == name]
        check[name] = {"l1_recipe": round(float(_l1(readings[rows], recipes[name], indices).mean()), DECIMALS),
                       "l1_derived_from_other_presets": round(float(_l1(readings[rows], derived, indices).mean()),
                                                             DECIMALS)}
    return check


ABOUT = ("GenAffect's expression presets in the space of the blendshape estimator (MediaPipe's face landmarker): "
         "per preset the 52 blendshapes the estimator reads on a face showing it (BLENDSHAPE_NAMES order). Written by "
         "tools/calibrate_expressions.py; see its docstring for the rules. The FACS recipes in expressions.json stay "
         "the presets' definition (prompts, sliders).")
STATISTIC = ("per blendshape, the median over people of each person's median reading: the vector that minimises the "
             "mean L1 difference to the readings (Face Metrics' error), robust to a minority of mislabelled photos and "
             "misreads, each person counted once")
READABLE_NOTE = ("readable means seen to move on these photos: a movement none of them shows (puffed cheeks in emotion "
                 "photos) stays off the list until photos showing it are added")
DERIVED_RULE = ("presets without photos: the neutral target plus, on the readable blendshapes, the FACS recipe's "
                "blendshapes times the gains; unreadable blendshapes keep the neutral reading")
GAINS_RULE = ("per readable blendshape, least squares of (calibrated target - neutral target) on the recipe's value "
              "through the origin, over the photo-calibrated presets whose recipe drives it (at least 0); 1 where none "
              "does")
EVALUATION = ("blendshape L1 = mean |reading - target| over the readable blendshapes, per photo, averaged over the "
              "preset's photos; old = the FACS recipe's blendshapes; new = the calibrated target computed without the "
              "photo's person (leave-one-person-out); nearest rate = share of photos nearer (L1) their own target than "
              "every other calibrated preset's (ties are misses)")


def read_photos(photos: list[Photo], photos_root: str, estimator, min_face: int, cache: str | None, on_progress):
    """(readings, the photos kept, {reason: count} skipped, the unreadable files relative to ``photos_root``): from
    ``cache`` when it exists, else measured (and written to ``cache`` when one is named)."""
    if cache and os.path.isfile(cache):
        stored = np.load(cache, allow_pickle=False)
        readings, skipped = stored["readings"], json.loads(str(stored["skipped"]))
        unreadable = json.loads(str(stored["unreadable"])) if "unreadable" in stored else []
        keep = set(stored["paths"].tolist())
        kept = [p for p in photos if os.path.relpath(p.path, photos_root) in keep]
        order = {path: i for i, path in enumerate(stored["paths"].tolist())}
        return readings[[order[os.path.relpath(p.path, photos_root)] for p in kept]], kept, skipped, unreadable
    readings, kept, skipped, unreadable = measure_photos(photos, estimator, min_face, on_progress)
    unreadable = [os.path.relpath(path, photos_root) for path in unreadable]
    if cache:
        np.savez(cache, readings=readings, skipped=json.dumps(skipped), unreadable=json.dumps(unreadable),
                 paths=np.array([os.path.relpath(p.path, photos_root) for p in kept]))
    return readings, kept, skipped, unreadable


def preset_targets(readings: np.ndarray, kept: list[Photo], presets, min_people: int):
    """({preset: target} of the presets with photos of ``min_people`` people or more, {preset: people} of those with
    fewer)."""
    persons = [p.person for p in kept]
    targets, too_few = {}, {}
    for expression in presets:
        rows = [i for i, p in enumerate(kept) if p.expression == expression]
        people = len({persons[i] for i in rows})
        if people >= min_people:
            targets[expression] = person_median(readings[rows], [persons[i] for i in rows])
        elif rows:
            too_few[expression] = people
    return targets, too_few


def calibrated_entries(targets: dict[str, np.ndarray], kept: list[Photo], presets) -> dict:
    """The stored entries of the photo-calibrated presets, in the library's order."""
    entries = {}
    for name in presets:
        if name in targets:
            rows = [p for p in kept if p.expression == name]
            entries[name] = {"blendshapes": _vector(targets[name]), "photo_calibrated": True,
                             "photos": len(rows), "people": len({p.person for p in rows})}
    return entries


def calibrate(photos_root: str, estimator, *, estimator_about: dict, provenance=None, min_face: int = MIN_FACE,
              threshold: float = THRESHOLD, min_photos: int = MIN_PHOTOS, min_people: int = MIN_PEOPLE,
              min_people_per_preset: int = MIN_PEOPLE_PER_PRESET, compare=None, cache: str | None = None,
              on_progress=None) -> dict:
    """The estimator-targets data (as stored in ``estimator_targets.json``) from a folder of labelled photos."""
    from genaffect.models.expression.batch import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES, NUM_BLENDSHAPES

    recipes = _recipes()
    photos = find_photos(photos_root, list(recipes))
    readings, kept, skipped, unreadable = read_photos(photos, photos_root, estimator, min_face, cache, on_progress)
    if not kept:
        raise SystemExit(f"none of the {len(photos)} photos had a usable face ({skipped}).")
    persons = [p.person for p in kept]
    targets, too_few = preset_targets(readings, kept, recipes, min_people_per_preset)
    compare = list(compare or targets)
    if not set(compare) <= set(targets):
        raise SystemExit(f"--compare names presets without enough photos: {sorted(set(compare) - set(targets))}.")
    neutral = targets.get("neutral", np.zeros(NUM_BLENDSHAPES, np.float32))
    readable = readable_names(readings, persons, neutral, threshold, min_photos, min_people)
    if not readable:
        raise SystemExit(f"no blendshape moved {threshold} above the neutral reading on {min_photos} photos; "
                         "use more (and more expressive) photos.")
    indices = np.array([BLENDSHAPE_INDEX[n] for n in readable], dtype=np.int64)
    gains = fit_gains({n: t for n, t in targets.items() if n != "neutral"}, recipes, neutral, indices)

    data = {
        "_about": ABOUT, "format": "genaffect.estimator_targets", "version": 1,
        "created": datetime.date.today().isoformat(),
        "estimator": estimator_about,
        "photos": {"provenance": provenance, "photos_found": len(photos), "photos_used": len(kept),
                   "people": len(set(persons)), "skipped": skipped,
                   **({"unreadable": unreadable} if unreadable else {}), "min_face_px": min_face,
                   "min_people_per_preset": min_people_per_preset, "presets_with_too_few_people": too_few,
                   "committed": False},
        "statistic": STATISTIC,
        "readable": {
            "rule": (f"a movement blendshape is readable when at least {min_photos} photos of at least {min_people} "
                     f"people read it {threshold} or more above the neutral target's reading"),
            "threshold": threshold, "min_photos": min_photos, "min_people": min_people, "names": readable,
            "unreadable": [n for n in BLENDSHAPE_NAMES[1:] if n not in readable], "note": READABLE_NOTE},
        "derived_rule": DERIVED_RULE,
        "gains_rule": GAINS_RULE,
        "gains": {name: round(float(gains[BLENDSHAPE_INDEX[name]]), DECIMALS) for name in readable},
        "blendshape_names": list(BLENDSHAPE_NAMES),
        "targets": calibrated_entries(targets, kept, recipes),
    }
    data["targets"] = derived_targets(data)
    data["evaluation"] = {
        "what": EVALUATION,
        "nearest_among": compare,
        "per_preset": evaluate(readings, kept, {n: recipes[n] for n in compare}, indices),
        "derived_rule_on_calibrated_presets": held_out_rule_check(targets, readings, kept, neutral, indices),
    }
    return data


def landmarker_about(path: str) -> dict:
    with open(path, "rb") as handle:
        content = handle.read()
    about = {"file": os.path.basename(path), "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    try:
        import mediapipe

        about["mediapipe"] = mediapipe.__version__
    except ImportError:
        pass
    return about


def write(data: dict, output: str) -> None:
    from genaffect.models.expression.expression_library import check_estimator_targets, library

    check_estimator_targets(data, list(library()))  # never write a file the pack would refuse
    text = json.dumps(data, indent=1, ensure_ascii=False)
    # one line per vector or name list: the file stays readable and its diffs show which preset changed
    text = re.sub(r"\[\s*\n\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r",\s*\n\s*", ", ", m.group(1)) + "]", text)
    partial = output + ".partial"  # written whole, then renamed: a crash never leaves the pack's file half written
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    os.replace(partial, output)


def report(data: dict) -> str:
    """The evaluation as a Markdown table."""
    lines = ["| preset | photos (people) | L1 old (recipe) | L1 new (person left out) | nearest old | nearest new |",
             "|---|---|---|---|---|---|"]
    for name, row in data["evaluation"]["per_preset"].items():
        new_rate = row["nearest_rate_new_person_left_out"]
        lines.append(f"| {name} | {row['photos']} ({row['people']}) | {row['l1_old']:.3f} | "
                     f"{row['l1_new_person_left_out']:.3f} | {row['nearest_rate_old']:.0%} | "
                     + (f"{new_rate:.0%} |" if new_rate is not None else "n/a |"))
    return "\n".join(lines)


def rederive(path: str) -> dict:
    """Refresh the targets of the presets without photos in the targets file ``path`` from its stored gains; a file
    that cannot be read is refused and left as it is."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:  # missing, not UTF-8, not JSON
        raise SystemExit(f"{path} cannot be read ({type(error).__name__}: {error}); --rederive refreshes an existing "
                         "targets file (restore it first, e.g. git checkout models/data).") from None
    if not isinstance(data, dict) or not isinstance(data.get("targets"), dict):
        raise SystemExit(f"{path} is not an estimator-targets file (no targets); restore it first.")
    data["targets"] = derived_targets(data)
    write(data, path)
    print(f"refreshed the presets without photos in {path}")
    return data


def report_progress(done: int, total: int) -> None:
    if done % 250 == 0:
        print(f"{done}/{total} photos", file=sys.stderr)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", help="folder of <expression>/[<person>/]<photos>")
    parser.add_argument("--landmarker", help="MediaPipe's face_landmarker.task")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="where to write (default: the pack's data file)")
    parser.add_argument("--provenance", help="JSON describing the photos' source (default: PHOTOS/provenance.json)")
    parser.add_argument("--min-face", type=int, default=MIN_FACE, help=f"pixels across a face (default {MIN_FACE})")
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument("--min-photos", type=int, default=MIN_PHOTOS)
    parser.add_argument("--min-people", type=int, default=MIN_PEOPLE)
    parser.add_argument("--min-people-per-preset", type=int, default=MIN_PEOPLE_PER_PRESET,
                        help="people a preset needs to be photo-calibrated (default %(default)s)")
    parser.add_argument("--compare", help="presets the evaluation compares, comma-separated (default: all "
                                          "photo-calibrated ones)")
    parser.add_argument("--cache", help="an .npz to keep the photos' readings in (re-runs skip the estimator)")
    parser.add_argument("--rederive", action="store_true",
                        help="no photos: refresh the targets of the presets without photos in --output from the "
                             "recipes and its stored gains (after editing a recipe or adding a preset)")
    return parser


def main(argv=None, estimator=None) -> dict:
    parser = argument_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import_pack()

    if args.rederive:
        return rederive(args.output)
    if not args.photos or not (args.landmarker or estimator is not None):
        parser.error("--photos and --landmarker are needed (or --rederive)")
    if estimator is None:
        from genaffect.models.expression.expression_estimator import load_estimator

        estimator = load_estimator(args.landmarker)
    about = landmarker_about(args.landmarker) if args.landmarker else {"file": estimator.landmarker_file}
    provenance_file = args.provenance or os.path.join(args.photos, "provenance.json")
    provenance = None
    if os.path.isfile(provenance_file):
        with open(provenance_file, encoding="utf-8") as handle:
            provenance = json.load(handle)
    data = calibrate(args.photos, estimator, estimator_about=about, provenance=provenance, min_face=args.min_face,
                     threshold=args.threshold, min_photos=args.min_photos, min_people=args.min_people,
                     min_people_per_preset=args.min_people_per_preset,
                     compare=[n.strip() for n in args.compare.split(",")] if args.compare else None, cache=args.cache,
                     on_progress=report_progress)
    write(data, args.output)
    print(f"\n{data['photos']['photos_used']} photos of {data['photos']['people']} people; "
          f"{len(data['readable']['names'])} readable blendshapes; written to {args.output}\n\n{report(data)}")
    return data


if __name__ == "__main__":
    import_pack()
    from genaffect.models.errors import run_command

    sys.exit(run_command(main))
