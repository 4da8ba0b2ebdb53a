"""Fit GenAffect's face-motion model (models/data/face_motion.json) on labelled photos of many people.

    python tools/fit_face_motion.py fit --photos PHOTOS/ --landmarker ComfyUI/models/mediapipe/face_landmarker.task \\
        [--cache readings.npz] [--provenance provenance.json]
    python tools/fit_face_motion.py evaluate --photos OTHER/ --landmarker ... [--report round_trip.json]

PHOTOS/ holds ``<expression>/<person>/<files>`` (the layout of tools/calibrate_expressions.py, which finds them; the
same person's folder name under several expressions is one person). Nothing is downloaded and no photo is copied anywhere; the
optional provenance JSON (where the photos come from, their licence, commit) is written into the model file.

**fit**: every photo goes through the pack's own estimator (MediaPipe's face landmarker, the largest face; with
``--cache`` the readings are kept, so a re-run skips it). Each photo's 478 landmarks are brought into the frame of
MediaPipe's canonical face model (parsed from the ``.task`` file itself, Apache-2.0) by its head rotation and a
scale and shift on MediaPipe's rigid Procrustes points. Then, over the people with two photos or more and outside
a held-out fifth of the people (``sha1(person) % 5 == 0``):

- ridge regression of each photo's landmarks minus its person's mean on its readable blendshapes minus the
  person's mean, plus six head-pose columns (yaw, pitch, roll over 30 degrees, their squares, yaw x pitch) that are
  not penalised and not stored: they soak up perspective and the pull between gaze and head pose; the ridge
  strength by 5-fold person-grouped cross-validation;
- scores on the held-out people (R², mean landmark error against "no change");
- read-back gains: photos of 50 fitted people are warped to the readings of other fitted people's expressive
  photos and read back by the landmarker; a blendshape whose asked change is read back at slope s gets its moves
  times clip(1 / s, 1, 3) (a warped photo keeps its neutral shading, so the reader under-reads it);
- the round trip on held-out people: each photo warped to the 7 basic presets' estimator-space targets and read
  back; blendshape L1 to the target and how often the read-back is nearest its own preset, against the photo
  itself.

**evaluate**: the same round trip on another source (one neutral photo per person), never used in the fit.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import struct
import sys
import time
import zipfile

import numpy as np

from pack_loader import PACK_DIR, import_pack

DEFAULT_OUTPUT = os.path.join(PACK_DIR, "models", "data", "face_motion.json")
BASIC = ("neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted")
MIN_FACE = 100  # pixels across the face's landmarks
MAX_RESIDUAL = 1.5  # cm rms from the canonical face after pose normalisation: more is a misread
ALPHAS = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)
MAX_GAIN = 3.0
MAX_TURN = 25.0  # photos turned further are left out of calibration and round trips
REACH_QUANTILE = 99.5  # a blendshape's reach: this percentile of its readings on the fitted photos

# The warp mesh (written into the model file, read from there by Python and the browser)
OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149,
        150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIP_COLUMNS = ((78, 78), (191, 95), (80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318),
               (415, 324), (308, 308))  # inner lips, corner to corner: (upper, lower)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)  # the subject's right
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_IRIS, LEFT_IRIS = 468, 473
SKIN_POINTS = (50, 280, 151, 4, 205, 425, 9, 117, 346)  # cheeks, forehead, nose
RING_FACTORS = (1.3, 1.75)
RING_FOLLOW = (0.5, 0.0)  # the outer ring stays: nothing beyond it changes
PIVOT_CM = (0.0, 0.0, -2.0)
LIP_POINTS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409, 78, 95, 88,
              178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)

pack = import_pack()
import calibrate_expressions as calibration  # noqa: E402  (beside this file: finding photos is its rule)
from genaffect.models.expression import expression_estimator, face_landmarks, face_motion, photo_warp  # noqa: E402
from genaffect.models.expression.batch import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES  # noqa: E402
from genaffect.models.expression.expression_library import (  # noqa: E402
    estimator_target,
    preset_names,
    readable_blendshapes,
)


# ---- MediaPipe's canonical face model, from the .task file -------------------------------------------------------
def _varint(buffer: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buffer[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(buffer: bytes):
    """(field number, wire type, value) of a protobuf message, read from the wire format."""
    i = 0
    while i < len(buffer):
        key, i = _varint(buffer, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buffer, i)
        elif wire == 1:
            value, i = buffer[i:i + 8], i + 8
        elif wire == 2:
            length, i = _varint(buffer, i)
            value, i = buffer[i:i + length], i + length
        elif wire == 5:
            value, i = buffer[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not used by MediaPipe's geometry metadata")
        yield field, wire, value


def canonical_mesh(task_path: str) -> dict:
    """MediaPipe's canonical face model from ``geometry_pipeline_metadata_landmarks.binarypb`` inside a
    face_landmarker.task (the same data as mediapipe/modules/face_geometry/data/canonical_face_model.obj).
    GeometryPipelineMetadata: 1 canonical_mesh {3 vertex_buffer (x y z u v per vertex), 4 index_buffer},
    2 procrustes_landmark_basis {1 landmark_id, 2 weight}."""
    with zipfile.ZipFile(task_path) as bundle:
        metadata = bundle.read("geometry_pipeline_metadata_landmarks.binarypb")
    vertices, indices, basis = [], [], []
    for field, _, value in _fields(metadata):
        if field == 1:
            for inner, wire, item in _fields(value):
                if inner == 3:
                    vertices += struct.unpack(f"<{len(item) // 4}f", item) if wire == 2 else struct.unpack("<f", item)
                elif inner == 4:
                    if wire == 2:
                        i = 0
                        while i < len(item):
                            index, i = _varint(item, i)
                            indices.append(index)
                    else:
                        indices.append(item)
        elif field == 2:
            landmark, weight = 0, 0.0
            for inner, _, item in _fields(value):
                if inner == 1:
                    landmark = item
                elif inner == 2:
                    weight = struct.unpack("<f", item)[0]
            basis.append((landmark, weight))
    buffer = np.array(vertices, np.float64).reshape(-1, 5)
    return {"vertices": buffer[:, :3], "triangles": np.array(indices, np.int64).reshape(-1, 3),
            "procrustes_ids": np.array([b[0] for b in basis]), "procrustes_weights": np.array([b[1] for b in basis])}


def warp_topology(triangles: np.ndarray) -> dict:
    """The warp mesh: the canonical triangles less the eye openings; a fan from each iris centre to its eyelid
    contour (gaze slides the iris); the mouth opening as its own group (filled when the lips part); two rings around
    the face oval (the inner one follows half the oval's movement, the outer one stays)."""
    lips = {v for pair in LIP_COLUMNS for v in pair}
    is_mouth = np.array([set(t) <= lips for t in triangles.tolist()])
    is_eye = np.array([set(t) <= set(RIGHT_EYE) or set(t) <= set(LEFT_EYE) for t in triangles.tolist()])
    eye = [(iris, contour[i], contour[(i + 1) % len(contour)])
           for contour, iris in ((RIGHT_EYE, RIGHT_IRIS), (LEFT_EYE, LEFT_IRIS)) for i in range(len(contour))]
    n = len(OVAL)
    inner, outer = [478 + i for i in range(n)], [478 + n + i for i in range(n)]
    ring = []
    for a, b in ((inner, outer), (OVAL, inner)):  # the outer strip is painted first
        for i in range(n):
            j = (i + 1) % n
            ring += [(a[i], a[j], b[i]), (a[j], b[j], b[i])]
    uv = {}
    for k, (upper, lower) in enumerate(LIP_COLUMNS):
        u = k / (len(LIP_COLUMNS) - 1)
        uv[str(upper)] = [u, 0.0 if upper != lower else 0.5]
        uv[str(lower)] = [u, 1.0 if upper != lower else 0.5]
    groups = {"ring": np.array(ring), "mouth": triangles[is_mouth], "eye": np.array(eye),
              "skin": triangles[~is_mouth & ~is_eye]}
    return {"vertices": "0..477 MediaPipe landmarks, 478..513 inner border ring, 514..549 outer border ring",
            "oval": list(OVAL), "lip_columns": [list(c) for c in LIP_COLUMNS], "right_eye": list(RIGHT_EYE),
            "left_eye": list(LEFT_EYE), "ring_factors": list(RING_FACTORS), "ring_follow": list(RING_FOLLOW),
            "pivot_cm": list(PIVOT_CM), "skin_points": list(SKIN_POINTS),
            "paint_order": "ring, mouth, eye, then skin sorted far to near by mean destination depth; last painted wins",
            "triangles": {k: v.ravel().tolist() for k, v in groups.items()}, "mouth_uv": uv}


# ---- photos and their readings ------------------------------------------------------------------------------------
def find_photos(root: str) -> list[tuple[str, str, str]]:
    """(expression, person, path) of every photo under ``root`` (tools/calibrate_expressions.py's rule)."""
    return [(photo.expression, photo.person, photo.path) for photo in calibration.find_photos(root, preset_names())]


class Reader:
    """The pack's estimator: MediaPipe's face landmarker, the largest face."""

    def __init__(self, task: str):
        self.landmarker = expression_estimator.create_face_landmarker(task, max_faces=4)

    def read(self, rgb: np.ndarray) -> dict | None:
        faces = face_landmarks.faces_from_result(self.landmarker.detect(expression_estimator.to_mediapipe_image(rgb)))
        return faces[face_landmarks.face_order(faces, "largest")[0]] if faces else None

    def close(self):
        self.landmarker.close()


def read_photos(photos, reader: Reader) -> dict:
    keys = ("path", "expression", "person", "size", "landmarks", "blendshapes", "head_pose")
    rows = {k: [] for k in keys}
    skipped, start = 0, time.time()
    for n, (expression, person, path) in enumerate(photos):
        try:
            rgb = pack.models.images.read_photo(path)
        except OSError:
            skipped += 1
            continue
        face = reader.read(rgb)
        if face is None:
            skipped += 1
            continue
        for key, value in zip(keys, (path, expression, person, rgb.shape[:2], face["landmarks"], face["blendshapes"],
                                     face["head_pose"])):
            rows[key].append(value)
        if n % 500 == 0:
            print(f"read {n}/{len(photos)} photos in {time.time() - start:.0f} s ({skipped} without a face)", flush=True)
    return {k: np.array(v) for k, v in rows.items()} | {"skipped": np.array(skipped)}


def readings(args) -> dict:
    if args.cache and os.path.isfile(args.cache):
        with np.load(args.cache) as cached:
            data = {k: cached[k] for k in cached.files}
        print(f"{len(data['path'])} readings from {args.cache}")
        return data
    reader = Reader(args.landmarker)
    data = read_photos(find_photos(args.photos), reader)
    reader.close()
    if args.cache:
        np.savez_compressed(args.cache, **data)
    return data


# ---- the fit ------------------------------------------------------------------------------------------------------
def held_out(person: str) -> bool:
    return int(hashlib.sha1(person.encode()).hexdigest(), 16) % 5 == 0


def posed(data: dict, i: int, mesh: face_motion.CanonicalMesh) -> face_motion.PosedFace:
    height, width = data["size"][i]
    return face_motion.pose_face(mesh, data["landmarks"][i], data["blendshapes"][i], data["head_pose"][i], width, height)


def nuisance(head_pose: np.ndarray) -> np.ndarray:
    yaw, pitch, roll = (np.asarray(head_pose, np.float64) / 30.0).T
    return np.stack([yaw, pitch, roll, yaw * yaw, pitch * pitch, yaw * pitch], 1)


def centred(values: np.ndarray, persons: np.ndarray) -> np.ndarray:
    _, group = np.unique(persons, return_inverse=True)
    sums = np.zeros((group.max() + 1, values.shape[1]))
    np.add.at(sums, group, values)
    return values - sums[group] / np.bincount(group)[group, None]


def similarity_align(points: np.ndarray, onto: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    weights = weights / weights.sum()
    pm, qm = weights @ points[ids], weights @ onto[ids]
    a, b = points[ids] - pm, onto[ids] - qm
    u, s, vt = np.linalg.svd((b * weights[:, None]).T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1, 1, d]) @ vt
    scale = (s * np.array([1, 1, d])).sum() / (weights[:, None] * a ** 2).sum()
    return (points - pm) @ rotation.T * scale + qm


def aligned(canonical: np.ndarray, persons: np.ndarray, mesh) -> np.ndarray:
    """Each photo's landmarks similarity-aligned (on the rigid points) to its person's mean, twice: the per-photo
    alignment noise would otherwise leak into the moves as rigid drift."""
    out = canonical.copy()
    for _ in range(2):
        means = {p: out[persons == p].mean(0) for p in np.unique(persons)}
        out = np.stack([similarity_align(out[i], means[persons[i]], mesh.basis_ids, mesh.basis_weights)
                        for i in range(len(out))])
    return out


def ridge(x: np.ndarray, y: np.ndarray, alpha: float, penalised: int) -> np.ndarray:
    penalty = np.zeros(x.shape[1])
    penalty[:penalised] = alpha
    return np.linalg.solve(x.T @ x + np.diag(penalty), x.T @ y)


def scores(y: np.ndarray, predicted: np.ndarray, iod: float) -> dict:
    error = np.linalg.norm((y - predicted).reshape(len(y), -1, 3), axis=2)
    baseline = np.linalg.norm(y.reshape(len(y), -1, 3), axis=2)
    return {"r2": float(1 - ((y - predicted) ** 2).sum() / (y ** 2).sum()), "mean_err_cm": float(error.mean()),
            "mean_err_iod_pct": float(100 * error.mean() / iod), "baseline_err_cm": float(baseline.mean()),
            "baseline_err_iod_pct": float(100 * baseline.mean() / iod)}


def quantise(moves: np.ndarray):
    scale = np.abs(moves).max(1) / 32767.0
    scale[scale == 0] = 1.0
    scale = np.array([float(f"{s:.6e}") for s in scale])  # exactly what the JSON carries
    return scale, np.round(moves / scale[:, None]).astype("<i2")


def encode_moves(data: dict, moves: np.ndarray) -> float:
    scale, quantised = quantise(moves)
    data["moves"] = {"encoding": "int16 little-endian, base64; row k (landmark-major x, y, z) times scale[k]",
                     "shape": [len(moves), 478, 3], "scale": scale.tolist(),
                     "data": base64.b64encode(quantised.tobytes()).decode("ascii")}
    return float(np.abs(quantised * scale[:, None] - moves).max())


def fit(data: dict, mesh_data: dict, names: list[str]) -> tuple[dict, dict]:
    mesh = face_motion.CanonicalMesh(mesh_data["vertices"], mesh_data["triangles"], mesh_data["procrustes_ids"],
                                     mesh_data["procrustes_weights"])
    count = len(data["path"])
    canonical = np.stack([posed(data, i, mesh).canonical for i in range(count)])
    residual = np.sqrt(np.mean(np.sum((canonical[:, :468] - mesh.vertices) ** 2, 2), 1))
    width = np.ptp(data["landmarks"][:, :, 0], axis=1) * data["size"][:, 1]
    keep = (width >= MIN_FACE) & (residual < MAX_RESIDUAL)
    persons = data["person"]
    photos_of = {p: c for p, c in zip(*np.unique(persons[keep], return_counts=True))}
    usable = keep & np.array([photos_of.get(p, 0) >= 2 for p in persons])
    out = np.array([held_out(p) for p in persons])
    fit_rows, test_rows = np.nonzero(usable & ~out)[0], np.nonzero(usable & out)[0]
    print(f"{keep.sum()} of {count} photos kept; fit on {len(fit_rows)} photos of {len(set(persons[fit_rows]))} "
          f"people, held out {len(test_rows)} of {len(set(persons[test_rows]))}", flush=True)
    columns = [BLENDSHAPE_INDEX[n] for n in names]
    k = len(names)
    mean_shape = canonical[fit_rows].mean(0)
    iod = float(np.linalg.norm(mean_shape[RIGHT_IRIS] - mean_shape[LEFT_IRIS]))

    def design(rows):
        x = np.concatenate([data["blendshapes"][rows][:, columns].astype(np.float64), nuisance(data["head_pose"][rows])], 1)
        y = aligned(canonical[rows], persons[rows], mesh).reshape(len(rows), -1)
        return centred(x, persons[rows]), centred(y, persons[rows]), y

    x, y, _ = design(fit_rows)
    fit_persons = np.unique(persons[fit_rows])
    fold_of = dict(zip(fit_persons, np.random.default_rng(0).integers(0, 5, len(fit_persons))))
    folds = np.array([fold_of[p] for p in persons[fit_rows]])
    cv = {}
    for alpha in ALPHAS:
        sse = sum(((y[folds == f] - x[folds == f] @ ridge(x[folds != f], y[folds != f], alpha, k)) ** 2).sum()
                  for f in range(5))
        cv[str(alpha)] = float(1 - sse / (y ** 2).sum())
        print(f"alpha {alpha}: cross-validated R² {cv[str(alpha)]:.4f}", flush=True)
    alpha = float(max(cv, key=cv.get))
    weights = ridge(x, y, alpha, k)
    xt, yt, test_aligned = design(test_rows)
    report = {"alpha": alpha, "cv_r2": cv, "held_out": scores(yt, xt @ weights, iod),
              "held_out_expression_terms_only": scores(yt, xt[:, :k] @ weights[:k], iod)}
    # what a warp does: one neutral photo of a held-out person -> that person's other photos
    blend = data["blendshapes"][:, columns].astype(np.float64)
    position = {row: n for n, row in enumerate(test_rows)}
    errors, by_person = {}, {}
    for row in test_rows:
        by_person.setdefault(persons[row], []).append(row)
    for rows in by_person.values():
        neutral = [r for r in rows if data["expression"][r] == "neutral"]
        for other in (r for r in rows if data["expression"][r] != "neutral" and neutral):
            start, end = test_aligned[position[neutral[0]]], test_aligned[position[other]]
            predicted = start + (blend[other] - blend[neutral[0]]) @ weights[:k] + (
                nuisance(data["head_pose"][[other]]) - nuisance(data["head_pose"][[neutral[0]]]))[0] @ weights[k:]
            error = np.linalg.norm((end - predicted).reshape(-1, 3), axis=1)
            stay = np.linalg.norm((end - start).reshape(-1, 3), axis=1)
            for label in (data["expression"][other], "all"):
                errors.setdefault(label, []).append((error.mean(), stay.mean(), error[list(LIP_POINTS)].mean(),
                                                     stay[list(LIP_POINTS)].mean()))
    report["held_out_pairs_neutral_to_other"] = {
        label: dict(zip(("pairs", "model_err_cm", "no_change_err_cm", "model_err_lips_cm", "no_change_err_lips_cm"),
                        [len(v)] + np.mean(v, 0).tolist())) for label, v in sorted(errors.items())}
    neutral_target = estimator_target("neutral")[columns]
    moves = weights[:k]
    report["support_photos_0.1_above_neutral"] = {
        n: int((blend[fit_rows, j] - neutral_target[j] >= 0.1).sum()) for j, n in enumerate(names)}
    reach = np.percentile(blend[fit_rows], REACH_QUANTILE, axis=0)
    report["reach_rule"] = f"per blendshape, the {REACH_QUANTILE:g}th percentile of its readings on the fitted photos"
    report["iod_cm"] = {"pupils": iod, "outer_eye_corners": float(np.linalg.norm(mesh.vertices[33] - mesh.vertices[263]))}
    split = {"fit_rows": fit_rows, "test_rows": test_rows, "keep": keep}
    print(json.dumps({key: report[key] for key in ("alpha", "held_out", "held_out_expression_terms_only")}), flush=True)
    return {"moves": moves, "mean_shape": mean_shape, "reach": reach, "report": report}, split


def model_file(names, mesh_data, fitted, provenance, landmarker: str) -> dict:
    with open(landmarker, "rb") as handle:
        task_bytes = handle.read()
    import mediapipe

    data = {
        "_about": "GenAffect's face-motion model: how MediaPipe's 478 face landmarks move, in the frame of MediaPipe's "
                  "canonical face model, per unit of each blendshape the estimator reads. A photo's landmarks, brought "
                  "into this frame by its head pose, move by sum_k (target - reading)[k] * moves[k]; head turns are "
                  "applied as rotations. Read by models/expression/face_motion.py and js/face_warp.js; written by "
                  "tools/fit_face_motion.py.",
        "format": face_motion.FORMAT, "version": face_motion.VERSION, "created": datetime.date.today().isoformat(),
        "units": "cm, MediaPipe canonical face model frame: x to the image right, y up, z towards the camera",
        "landmarks": 478, "blendshapes": names,
        "reach": [round(max(float(r), 0.01), 4) for r in fitted["reach"]],
        "mesh": {"vertices": [round(float(v), 6) for v in mesh_data["vertices"].ravel()],
                 "triangles": mesh_data["triangles"].ravel().tolist(),
                 "procrustes_ids": mesh_data["procrustes_ids"].tolist(),
                 "procrustes_weights": [round(float(v), 6) for v in mesh_data["procrustes_weights"]]},
        "mean_shape": [round(float(v), 4) for v in fitted["mean_shape"].ravel()],
        "provenance": {
            "photos": provenance,
            "landmarker": {"file": os.path.basename(landmarker), "bytes": len(task_bytes),
                           "sha256": hashlib.sha256(task_bytes).hexdigest(), "mediapipe": mediapipe.__version__,
                           "mode": "IMAGE, largest face, RGB uint8"},
            "mesh": {"source": "MediaPipe canonical face model (geometry_pipeline_metadata_landmarks.binarypb inside "
                               "face_landmarker.task; the same as mediapipe/modules/face_geometry/data/"
                               "canonical_face_model.obj)", "license": "Apache-2.0, Google LLC"},
            "method": "ridge regression of within-person landmark deviations on within-person readable-blendshape "
                      "deviations + head-pose nuisance terms (not stored); person-grouped 5-fold CV for alpha; "
                      "read-back gains from warps of fitted people read back by the landmarker",
            "script": "tools/fit_face_motion.py",
        },
        "fit": fitted["report"],
        "warp": warp_topology(mesh_data["triangles"]),
    }
    data["fit"]["quantisation_max_abs_error_cm"] = encode_moves(data, fitted["moves"])
    return data


# ---- warps read back ----------------------------------------------------------------------------------------------
def warp_and_read(motion, reader: Reader, rgb, face, target) -> np.ndarray | None:
    result = photo_warp.warp_photo(motion, rgb, face, target)
    if not np.array_equal(result.image[~result.mask], rgb[~result.mask]):
        raise AssertionError("a warp changed pixels outside its mask")
    read = reader.read(result.image)
    return None if read is None else read["blendshapes"].astype(np.float64)


def frontal(data: dict, i: int) -> bool:
    return bool(np.all(np.abs(data["head_pose"][i][:2]) < MAX_TURN))


def calibrate(model: dict, data: dict, split: dict, reader: Reader, photos: int = 50, per_photo: int = 12) -> None:
    """Read-back gains, baked into the moves (see the module's description)."""
    motion = face_motion.parse_face_motion(model)
    rng = np.random.default_rng(1)
    fitted = [i for i in split["fit_rows"] if frontal(data, i)]
    rng.shuffle(fitted)
    rows, seen = [], set()
    for i in fitted:
        if data["person"][i] not in seen and len(rows) < photos:
            seen.add(data["person"][i])
            rows.append(i)
    donors = [i for i in fitted if data["person"][i] not in seen and data["expression"][i] != "neutral"]
    asked, seen_back = [], []
    for n, i in enumerate(rows):
        rgb, face = pack.models.images.read_photo(data["path"][i]), posed(data, i, motion.mesh)
        for _ in range(per_photo):
            target = data["blendshapes"][donors[rng.integers(len(donors))]].astype(np.float64)
            read = warp_and_read(motion, reader, rgb, face, target)
            if read is not None:
                asked.append((target - face.reading)[motion.columns])
                seen_back.append((read - face.reading)[motion.columns])
        print(f"calibration: {n + 1}/{len(rows)} photos", flush=True)
    asked, seen_back = np.array(asked), np.array(seen_back)
    slope = (asked * seen_back).sum(0) / (asked * asked).sum(0)
    gain = np.where(slope > 0.1, np.clip(1.0 / np.maximum(slope, 1e-6), 1.0, MAX_GAIN), 1.0)
    report = model["fit"]
    report["quantisation_max_abs_error_cm"] = encode_moves(model, motion.moves * gain[:, None])
    report["readback_gain"] = {n: round(float(g), 4) for n, g in zip(motion.names, gain)}
    report["readback_calibration"] = {
        "rule": f"per blendshape, moves x clip(1 / slope, 1, {MAX_GAIN:g}); slope = read-back change / asked change "
                "(through 0) over warps of fitted people to the readings of other fitted people's expressive photos",
        "photos": len(rows), "warps_read": int(len(asked)),
        "slopes": {n: round(float(s), 3) for n, s in zip(motion.names, slope)}}
    moved = np.abs(face_motion.parse_face_motion(model).moves.reshape(len(gain), -1, 3))
    report["max_move_cm_per_unit"] = {n: round(float(np.linalg.norm(m, axis=1).max()), 4)
                                      for n, m in zip(motion.names, moved)}


def round_trip(motion, reader: Reader, photos: list[tuple[str, np.ndarray, face_motion.PosedFace]]) -> dict:
    """Each photo warped to the 7 basic presets' estimator-space targets and read back."""
    columns = [BLENDSHAPE_INDEX[n] for n in readable_blendshapes()]
    targets = np.stack([estimator_target(name).astype(np.float64) for name in BASIC])
    own, back, lost = [], [], 0
    for n, (label, rgb, face) in enumerate(photos):
        reads = [warp_and_read(motion, reader, rgb, face, target) for target in targets]
        lost += sum(r is None for r in reads)
        own.append(face.reading)
        back.append([np.full(len(BLENDSHAPE_NAMES), np.nan) if r is None else r for r in reads])
        if n % 20 == 0:
            print(f"round trip: {n + 1}/{len(photos)} photos", flush=True)
    own, back = np.array(own), np.array(back)

    def l1(a, b):
        return np.abs(a[..., columns] - b[..., columns]).mean(-1)

    per_preset, confusion = {}, np.zeros((7, 7), int)
    for k, name in enumerate(BASIC):
        found = ~np.isnan(back[:, k, 0])
        to_back = np.stack([l1(back[found, k], targets[j]) for j in range(7)], 1)
        to_own = np.stack([l1(own, targets[j]) for j in range(7)], 1)
        np.add.at(confusion[k], np.argmin(to_back, 1), 1)
        per_preset[name] = {"read_back": int(found.sum()), "l1_unwarped": round(float(to_own[:, k].mean()), 4),
                            "l1_warped": round(float(to_back[:, k].mean()), 4),
                            "nearest_unwarped": round(float(np.mean(np.argmin(to_own, 1) == k)), 4),
                            "nearest_warped": round(float(np.mean(np.argmin(to_back, 1) == k)), 4)}
    mean = {key: round(float(np.mean([p[key] for p in per_preset.values()])), 4)
            for key in ("l1_unwarped", "l1_warped", "nearest_unwarped", "nearest_warped")}
    return {"photos": len(photos), "warps_without_a_face_read_back": lost, "mean_of_7": mean, "per_preset": per_preset,
            "confusion_rows_target_columns_nearest": {"order": list(BASIC), "counts": confusion.tolist()}}


def held_out_round_trip(model: dict, data: dict, split: dict, reader: Reader, photos: int) -> dict:
    motion = face_motion.parse_face_motion(model)
    rows, seen = [], set()
    candidates = [i for i in split["test_rows"] if frontal(data, i)]
    np.random.default_rng(0).shuffle(candidates)
    for i in candidates:
        if data["person"][i] not in seen and len(rows) < photos:
            seen.add(data["person"][i])
            rows.append(i)
    labels = {str(k): int(v) for k, v in zip(*np.unique(data["expression"][rows], return_counts=True))}
    chosen = [(data["expression"][i], pack.models.images.read_photo(data["path"][i]), posed(data, i, motion.mesh))
              for i in rows]
    return {"source": "people held out of the fit (sha1(person) % 5 == 0), one photo each", "labels": labels,
            **round_trip(motion, reader, chosen)}


# ---- commands ------------------------------------------------------------------------------------------------------
def command_fit(args) -> None:
    mesh_data = canonical_mesh(args.landmarker)
    data = readings(args)
    names = list(readable_blendshapes())
    fitted, split = fit(data, mesh_data, names)
    provenance = {"photos_read": int(len(data["path"])), "photos_fit": int(len(split["fit_rows"])),
                  "people_fit": int(len(set(data["person"][split["fit_rows"]]))),
                  "held_out_rule": "sha1(person) % 5 == 0"}
    if args.provenance:
        with open(args.provenance, encoding="utf-8") as handle:
            provenance = json.load(handle) | provenance
    model = model_file(names, mesh_data, fitted, provenance, args.landmarker)
    reader = Reader(args.landmarker)
    try:
        if args.calibration_photos:
            calibrate(model, data, split, reader, args.calibration_photos)
        if args.round_trip_photos:
            model["fit"]["round_trip"] = {"held_out_people": held_out_round_trip(model, data, split, reader,
                                                                                 args.round_trip_photos)}
            print(json.dumps(model["fit"]["round_trip"]["held_out_people"]["mean_of_7"]), flush=True)
    finally:
        reader.close()
    face_motion.parse_face_motion(model)  # what the pack will read
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(model, handle, separators=(",", ":"))
    print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes)")


def command_evaluate(args) -> None:
    """One neutral photo per person of another source, warped to the 7 presets and read back."""
    with open(args.model, encoding="utf-8") as handle:
        motion = face_motion.parse_face_motion(json.load(handle))
    reader = Reader(args.landmarker)
    chosen, people = [], set()
    for expression, person, path in find_photos(args.photos):
        if expression != "neutral" or person in people or len(chosen) >= args.people:
            continue
        rgb = pack.models.images.read_photo(path)
        read = reader.read(rgb)
        if read is None or np.any(np.abs(read["head_pose"][:2]) >= MAX_TURN):
            continue
        people.add(person)
        chosen.append(("neutral", rgb, face_motion.pose_face(motion.mesh, read["landmarks"], read["blendshapes"],
                                                             read["head_pose"], rgb.shape[1], rgb.shape[0])))
    report = {"source": args.photos, **round_trip(motion, reader, chosen)}
    reader.close()
    print(json.dumps(report, indent=1))
    if args.report:
        with open(args.report, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit_parser = commands.add_parser("fit", help="fit the model on labelled photos and write it")
    fit_parser.add_argument("--photos", help="<expression>/<person>/<files> (not needed with a filled --cache)")
    fit_parser.add_argument("--landmarker", required=True, help="MediaPipe face_landmarker.task")
    fit_parser.add_argument("--cache", help="readings .npz: written after reading the photos, read instead of them")
    fit_parser.add_argument("--provenance", help="JSON describing the photos (source, licence), kept in the model")
    fit_parser.add_argument("--output", default=DEFAULT_OUTPUT)
    fit_parser.add_argument("--calibration-photos", type=int, default=50, help="0: no read-back gains")
    fit_parser.add_argument("--round-trip-photos", type=int, default=140, help="0: no round trip")
    evaluate_parser = commands.add_parser("evaluate", help="round trip on another source's neutral photos")
    evaluate_parser.add_argument("--photos", required=True)
    evaluate_parser.add_argument("--landmarker", required=True)
    evaluate_parser.add_argument("--model", default=DEFAULT_OUTPUT)
    evaluate_parser.add_argument("--people", type=int, default=70)
    evaluate_parser.add_argument("--report")
    args = parser.parse_args(argv)
    if args.command == "fit" and not args.photos and not (args.cache and os.path.isfile(args.cache)):
        parser.error("give --photos, or a --cache that holds the readings")
    {"fit": command_fit, "evaluate": command_evaluate}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
