"""Expression intensity in conditioning space: e = e_neutral + sum_k alpha_k (e_k - e_neutral).

PixelSmile (arXiv 2603.25728) edits expressions on Qwen-Image-Edit-2511 this way: a neutral instruction
and a target one are encoded (with the photo), and the target's intensity alpha moves the text
embedding along the line between them (0 = neutral, 1 = the target, up to ~1.5 exaggerates); two
targets blend by summing their deltas. Here each image's alphas come from its expression: its
blendshapes written as a combination of the targets' (least squares), so a preset at intensity 0.4, a
transition's steps or a 70/30 mix become one conditioning per image.

Token counts: equal-length embeddings (FLUX.1 and FLUX.2 pad prompts to 256 / 512 tokens; PixelSmile's
instructions differ in one token) are blended position by position. Unequal ones (Qwen-Image encodes
prompts unpadded) are aligned at their first token and the shorter is extended with zero vectors
that a padding mask marks; the blend keeps the longer length, and a position is padding only where
every embedding with a non-zero weight is padding. Alpha exactly 0 (or one target exactly 1, the rest
0) returns that embedding itself, unpadded.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import GenAffectInputError

SNAP = 1e-6  # alphas this close to 0 or 1 are taken as 0 or 1 (a preset at intensity 1 fits to 1 +- rounding)


def fit_alphas(expressions: np.ndarray, targets: np.ndarray, max_alpha: float = 1.5,
               neutral: np.ndarray | None = None, nearest: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(N, 52) expressions and (K, 52) full-intensity targets -> alphas (N, K) and each row's relative residual
    (0: exactly a blend of the targets), fitted on the movements from ``neutral`` (the neutral face in the same
    space: the estimator's reading of a relaxed face for estimator-space vectors; None: no blendshape moves).
    MediaPipe's ``_neutral`` score (index 0) is not a movement and is left out, as in Face Metrics.

    Blendshapes live in 0..1, so an exaggerated expression (a preset at intensity 1.5) has its strongest movements
    clipped at 1: those are censored - a value held at 1 only says the blend reaches at least 1 there - and the
    fit rests on the movements that were not clipped, so alpha 1.5 comes back as 1.5, not the ~1.2 the clipped
    values alone would say.

    An expression that needs an alpha outside 0..max_alpha is refused, unless ``nearest``: then each row takes the
    nearest blend within those bounds (measured expressions, e.g. a video's, are rarely exact blends of a few
    presets), and its residual says how much was lost."""
    expressions = np.asarray(expressions, np.float64)[:, 1:]
    targets = np.asarray(targets, np.float64)[:, 1:]
    base = np.zeros(targets.shape[1]) if neutral is None else np.asarray(neutral, np.float64)[1:]
    moves, deltas = expressions - base, targets - base
    norms = np.linalg.norm(deltas, axis=1)
    if np.any(norms == 0):
        raise GenAffectInputError("a target expression is neutral (no blendshape moves); the neutral conditioning "
                                  "already is that one: give targets that move the face.")
    alphas = np.zeros((len(expressions), len(targets)))
    residual = np.zeros(len(expressions))
    for row, (expression, move) in enumerate(zip(expressions, moves)):
        used = np.ones(len(move), dtype=bool)
        for _ in range(3):  # drop the clipped values the fit runs past, then fit again
            alpha = np.linalg.lstsq(deltas[:, used].T, move[used], rcond=None)[0]
            if nearest:
                alpha = bounded_least_squares(deltas[:, used], move[used][None], alpha[None], max_alpha)[0]
            predicted = base + alpha @ deltas
            censored = ((expression >= 1.0 - SNAP) & (predicted >= 1.0 - SNAP)) | \
                       ((expression <= SNAP) & (predicted <= SNAP) & (base > SNAP))
            if np.array_equal(~censored, used) or not (~censored).any():
                break
            used = ~censored
        alphas[row] = alpha
        residual[row] = np.linalg.norm((expression - predicted)[used])
    alphas[np.abs(alphas) < SNAP] = 0.0
    alphas[np.abs(alphas - 1.0) < SNAP] = 1.0
    size = np.linalg.norm(moves, axis=1)
    relative = np.divide(residual, size, out=np.zeros_like(residual), where=size > 0)
    bad = np.argwhere((alphas < 0) | (alphas > max_alpha + SNAP))
    if len(bad):
        image, target = (int(i) for i in bad[0])
        raise GenAffectInputError(
            f"image {image + 1}'s expression needs intensity {alphas[image, target]:.2f} of target {target + 1}, outside "
            f"0..{max_alpha:g}: give targets the images' expressions are made of (e.g. the same presets at intensity 1), "
            "or raise max_alpha.")
    return alphas.astype(np.float32), relative.astype(np.float32)


def bounded_least_squares(targets: np.ndarray, expressions: np.ndarray, start: np.ndarray, high: float,
                          sweeps: int = 2000, tolerance: float = 1e-12) -> np.ndarray:
    """Per row, the alphas in 0..high minimising |alphas @ targets - expression|: coordinate descent on the convex
    quadratic (each coordinate solved exactly, then clipped), from the unbounded solution clipped."""
    gram = targets @ targets.T
    correlation = expressions @ targets.T
    alphas = np.clip(start, 0.0, high)
    for _ in range(sweeps):
        largest = 0.0
        for k in range(len(gram)):
            rest = correlation[:, k] - alphas @ gram[:, k] + alphas[:, k] * gram[k, k]
            updated = np.clip(rest / gram[k, k], 0.0, high)
            largest = max(largest, float(np.abs(updated - alphas[:, k]).max(initial=0.0)))
            alphas[:, k] = updated
        if largest < tolerance:
            break
    return alphas


def _padded(tensor: torch.Tensor, mask: torch.Tensor | None, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, T, D) and its (1, T) keep-mask (None: all kept), zero-extended to ``length`` tokens."""
    keep = torch.ones(tensor.shape[:2], dtype=torch.bool, device=tensor.device) if mask is None else mask.bool()
    extra = length - tensor.shape[1]
    return torch.nn.functional.pad(tensor, (0, 0, 0, extra)), torch.nn.functional.pad(keep, (0, extra))


def blend(neutral: torch.Tensor, targets: list[torch.Tensor], alphas, neutral_mask=None, target_masks=None):
    """neutral + sum_k alphas[k] (targets[k] - neutral) for (1, T, D) embeddings (or (1, D) pooled ones);
    returns (embedding, keep-mask or None when nothing is padding)."""
    alphas = [float(a) for a in alphas]
    target_masks = target_masks or [None] * len(targets)
    if all(a == 0.0 for a in alphas):
        return neutral, neutral_mask
    if sorted(alphas) == [0.0] * (len(alphas) - 1) + [1.0]:
        k = alphas.index(1.0)
        return targets[k], target_masks[k]
    if neutral.ndim == 2 or (all(t.shape == neutral.shape for t in targets) and neutral_mask is None
                             and all(m is None for m in target_masks)):
        return neutral + sum(a * (t - neutral) for a, t in zip(alphas, targets)), None
    length = max([neutral.shape[1]] + [t.shape[1] for t in targets])
    base, base_keep = _padded(neutral, neutral_mask, length)
    out = base.clone()
    neutral_weight = 1.0 - sum(alphas)
    keep = base_keep.clone() if abs(neutral_weight) > SNAP else torch.zeros_like(base_keep)
    for alpha, target, mask in zip(alphas, targets, target_masks):
        if alpha == 0.0:
            continue
        padded, target_keep = _padded(target, mask, length)
        out = out + alpha * (padded - base)
        keep = keep | target_keep
    return out, (None if bool(keep.all()) else keep)
