"""A ridge map from MediaPipe blendshapes to FLAME-55, fitted on frames seen by both estimators.

Presets and slider edits only have blendshapes; Arc2Face's Expression Adapter wants FLAME-55. A map
fitted on a person's own frames (a short video through both estimators) fills that gap. It is
stored as safetensors with its fit statistics in the metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..errors import GenAffectInputError, ModelFileError
from .batch import FLAME_SIZE, NUM_BLENDSHAPES

FORMAT = "genaffect.blendshapes_to_flame"
FORMAT_VERSION = "1"
MIN_FRAMES = 10


@dataclass(eq=False)
class ExpressionMapping:
    weights: np.ndarray  # (52, 55)
    bias: np.ndarray  # (55,)
    ridge: float
    train_frames: int
    heldout_frames: int
    heldout_r2: float  # coefficient of determination on frames left out of the fit (NaN if none)

    def apply(self, blendshapes: np.ndarray) -> np.ndarray:
        """FLAME-55 for (N, 52) blendshapes, within SMIRK's output constraints (eyelids, jaw)."""
        import torch

        from .smirk_encoder import postprocess

        raw = np.asarray(blendshapes, dtype=np.float64) @ self.weights + self.bias
        return postprocess(torch.from_numpy(raw.astype(np.float32))).numpy()

    def describe(self) -> str:
        return (f"blendshapes -> FLAME-55 ridge map ({self.ridge:g}): fitted on {self.train_frames} frames, "
                f"R² {self.heldout_r2:.3f} on {self.heldout_frames} held-out frames")


def r2_score(truth: np.ndarray, predicted: np.ndarray) -> float:
    """R² over all outputs together: 1 - residual sum of squares / total sum of squares."""
    residual = float(((truth - predicted) ** 2).sum())
    total = float(((truth - truth.mean(axis=0)) ** 2).sum())
    return 1.0 - residual / total if total > 0 else float("nan")


def _solve(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + ridge * np.eye(x.shape[1])
    try:
        weights = np.linalg.solve(gram, xc.T @ yc)
    except np.linalg.LinAlgError as error:
        raise GenAffectInputError(
            f"the frames do not vary enough to fit a mapping with ridge {ridge:g} (every blendshape must move across "
            "the frames); raise ridge above 0 (e.g. 0.01) or use frames with varied expressions.") from error
    return weights, y_mean - x_mean @ weights


def fit_mapping(blendshapes: np.ndarray, flame: np.ndarray, ridge: float = 1e-2, heldout_fraction: float = 0.2, seed: int = 0) -> ExpressionMapping:
    """Fit on a random (1 - heldout_fraction) of the frames, report R² on the rest, refit on all."""
    x = np.asarray(blendshapes, dtype=np.float64)
    y = np.asarray(flame, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != NUM_BLENDSHAPES or y.shape != (x.shape[0], FLAME_SIZE):
        raise GenAffectInputError(f"expected (N, {NUM_BLENDSHAPES}) blendshapes and (N, {FLAME_SIZE}) FLAME values, got {x.shape} and {y.shape}.")
    if not (np.isfinite(ridge) and ridge >= 0):
        raise GenAffectInputError(f"ridge must be a number of 0 or more, got {ridge}.")
    if not 0.0 <= heldout_fraction < 1.0:
        raise GenAffectInputError(f"heldout_fraction must be from 0 up to (not including) 1, got {heldout_fraction}.")
    count = x.shape[0]
    if count < MIN_FRAMES:
        raise GenAffectInputError(f"{count} frames are too few to fit a mapping; use at least {MIN_FRAMES} frames with a face.")
    heldout = int(round(count * heldout_fraction))
    if count - heldout < MIN_FRAMES:
        raise GenAffectInputError(f"holding out {heldout_fraction:g} of {count} frames leaves {count - heldout} to fit on; "
                                  f"fitting needs {MIN_FRAMES}: lower heldout_fraction or use more frames.")
    order = np.random.default_rng(seed).permutation(count)
    test, train = order[:heldout], order[heldout:]
    score = float("nan")
    if heldout > 0:
        weights, bias = _solve(x[train], y[train], ridge)
        score = r2_score(y[test], x[test] @ weights + bias)
    weights, bias = _solve(x, y, ridge)
    return ExpressionMapping(weights, bias, ridge, len(train), heldout, score)


def save_mapping(mapping: ExpressionMapping, path: str) -> None:
    from safetensors.numpy import save_file

    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stats": json.dumps({"ridge": mapping.ridge, "train_frames": mapping.train_frames,
                             "heldout_frames": mapping.heldout_frames, "heldout_r2": mapping.heldout_r2}),
    }
    save_file({"weights": mapping.weights.astype(np.float32), "bias": mapping.bias.astype(np.float32)}, path, metadata=metadata)


REFIT = "Fit it again with GenAffect Fit Expression Mapping (it saves into models/genaffect/mappings/)."
STATS = {"ridge": float, "train_frames": int, "heldout_frames": int, "heldout_r2": float}


def _stats(metadata: dict, path: str) -> dict:
    try:
        stats = json.loads(metadata.get("stats", "{}"))
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: metadata field stats is not valid JSON ({error}). {REFIT}") from error
    if not isinstance(stats, dict):
        raise ModelFileError(f"{path}: metadata field stats is a {type(stats).__name__}, not an object. {REFIT}")
    for name, kind in STATS.items():
        value = stats.get(name)
        valid = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or value == int(value))
        if value is not None and not valid:
            raise ModelFileError(f"{path}: metadata field stats.{name} is {value!r}, not a number. {REFIT}")
    return stats


def load_mapping(path: str) -> ExpressionMapping:
    """A mapping file, checked from its header (format, version, exactly its two float tensors and their
    shapes) before its weights are read; non-finite weights are refused."""
    from safetensors import safe_open

    from ..files.weight_files import FLOAT_DTYPES, safetensors_layout

    metadata, layout = safetensors_layout(path, REFIT)
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a GenAffect expression mapping (format {metadata.get('format')!r}). {REFIT}")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > int(FORMAT_VERSION):
        raise ModelFileError(f"{path}: metadata field format_version is {version!r}; this GenAffect reads mappings up "
                             f"to version {FORMAT_VERSION}. {REFIT}")
    expected = {"weights": (NUM_BLENDSHAPES, FLAME_SIZE), "bias": (FLAME_SIZE,)}
    shapes = {key: shape for key, (shape, _) in layout.items()}
    if shapes != expected:
        raise ModelFileError(f"{path} holds {shapes}; a mapping holds weights {NUM_BLENDSHAPES}x{FLAME_SIZE} and bias "
                             f"{FLAME_SIZE}. {REFIT}")
    dtypes = {dtype for _, dtype in layout.values()}
    if not dtypes <= set(FLOAT_DTYPES):
        raise ModelFileError(f"{path} stores its values as {sorted(dtypes)}, not floating point. {REFIT}")
    stats = _stats(metadata, path)
    with safe_open(path, framework="np") as handle:
        tensors = {key: handle.get_tensor(key).astype(np.float64) for key in expected}
    for key, values in tensors.items():
        if not np.all(np.isfinite(values)):
            raise ModelFileError(f"{path}: {key} holds NaN or infinite values. {REFIT}")
    return ExpressionMapping(
        tensors["weights"], tensors["bias"], float(stats.get("ridge", float("nan"))),
        int(stats.get("train_frames", 0)), int(stats.get("heldout_frames", 0)),
        float(stats.get("heldout_r2", float("nan"))),
    )
