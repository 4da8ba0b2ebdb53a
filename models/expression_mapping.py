"""A ridge map from MediaPipe blendshapes to FLAME-55, fitted on frames seen by both estimators.

Presets and slider edits only have blendshapes; Arc2Face's Expression Adapter wants FLAME-55. A map
fitted on a person's own frames (a short video through both estimators) fills that gap. It is
stored as safetensors with its fit statistics in the metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .errors import GenAffectInputError, ModelFileError
from .expression import FLAME_SIZE, NUM_BLENDSHAPES

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
    weights = np.linalg.solve(gram, xc.T @ yc)
    return weights, y_mean - x_mean @ weights


def fit_mapping(blendshapes: np.ndarray, flame: np.ndarray, ridge: float = 1e-2, heldout_fraction: float = 0.2, seed: int = 0) -> ExpressionMapping:
    """Fit on a random (1 - heldout_fraction) of the frames, report R² on the rest, refit on all."""
    x = np.asarray(blendshapes, dtype=np.float64)
    y = np.asarray(flame, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != NUM_BLENDSHAPES or y.shape != (x.shape[0], FLAME_SIZE):
        raise GenAffectInputError(f"expected (N, {NUM_BLENDSHAPES}) blendshapes and (N, {FLAME_SIZE}) FLAME values, got {x.shape} and {y.shape}.")
    if ridge < 0:
        raise GenAffectInputError(f"ridge must be 0 or more, got {ridge}.")
    count = x.shape[0]
    if count < MIN_FRAMES:
        raise GenAffectInputError(f"{count} frames are too few to fit a mapping; use at least {MIN_FRAMES} frames with a face.")
    heldout = int(round(count * heldout_fraction))
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


def load_mapping(path: str) -> ExpressionMapping:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for a bad header
        raise ModelFileError(f"{path} is not a readable safetensors file ({error}).") from error
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a GenAffect expression mapping (format {metadata.get('format')!r}).")
    if tensors.get("weights") is None or tensors["weights"].shape != (NUM_BLENDSHAPES, FLAME_SIZE):
        raise ModelFileError(f"{path}: weights must be {NUM_BLENDSHAPES}x{FLAME_SIZE}.")
    stats = json.loads(metadata.get("stats", "{}"))
    return ExpressionMapping(
        tensors["weights"].astype(np.float64), tensors["bias"].astype(np.float64), stats.get("ridge", float("nan")),
        stats.get("train_frames", 0), stats.get("heldout_frames", 0), stats.get("heldout_r2", float("nan")),
    )
