"""Was a generated face copied from a reference photo? Decided by how close it is, with thresholds measured on
real photos (docs/judge.md), never by rank.

A rank rule ("nearer a reference than the references are to each other") flags a genuine new photo of the person
2/(k+1) of the time with k references, whatever the photos: it asks a question any photo answers yes to by chance.
Closeness does not: real photos of one person reach ArcFace cosine 0.95 and more (the same session, the same
light), so identity alone cannot tell a copy from a photo - but a copy is also the same face *shape*: the same
pose and expression, landmark for landmark (or mirrored). So a face is a copy when

- its cosine to a reference photo is at least :data:`COPY_COSINE_ALONE`: nearly the same pixels (the photo
  re-encoded, resized or mirrored); genuine photos of the person showing another expression stay below it;
- or, when the reference photo's landmarks are known (Estimate Expression on it, connected as
  ``reference_expression``), its cosine is at least :data:`COPY_COSINE` **and** its pose-normalised landmarks lie
  within :data:`COPY_SHAPE` of that photo's: the same person with the same face shape, pose and expression;
- or its aligned crop is nearly the reference photo's pixels, or their mirror image (:func:`pixel_similarity` at
  least :data:`COPY_PIXELS`): what the recognizer misses on mirrored and cropped copies.
"""

from __future__ import annotations

import numpy as np

# Chosen on one half of the people of three public posed sources (JAFFE, KDEF, the Taiwanese corpus; split by a
# hash of their id, tools/measure_judge.py) from genuine pairs of one person's photos showing different
# expressions: COPY_COSINE_ALONE is their 99.5th percentile (0.921), COPY_SHAPE about their 1st percentile. The
# rates - false positives on the other half's genuine photos, hits on copies of that half's photos - are in
# docs/judge.md, "Copy checks".
COPY_COSINE_ALONE = 0.92
COPY_COSINE = 0.80
COPY_SHAPE = 0.030  # RMS landmark distance, in units of the face's size (the judge's pose-normalised frame)


def copied(nearest_cosine: float | None, shape_distance: float | None,
           pixels: float | None = None) -> tuple[bool | None, str]:
    """(copied?, the numbers that decided) for one face: its highest ArcFace cosine to a reference photo, when
    known its landmark distance to the nearest reference photo's, and its highest :func:`pixel_similarity` to a
    reference photo's aligned crop. None: no face to judge."""
    if nearest_cosine is None:
        return None, ""
    identity = f"identity cosine {nearest_cosine:.3f} (copies from {COPY_COSINE_ALONE:.2f}"
    verdict = nearest_cosine >= COPY_COSINE_ALONE
    if shape_distance is None:
        reason = identity + "; no reference landmarks to compare)"
    else:
        verdict = verdict or (nearest_cosine >= COPY_COSINE and shape_distance <= COPY_SHAPE)
        reason = (identity + f", or from {COPY_COSINE:.2f} with a face shape distance up to {COPY_SHAPE:.3f}), "
                  f"face shape distance {shape_distance:.4f}")
    if pixels is not None:
        verdict = verdict or pixels >= COPY_PIXELS
        reason += f", pixel similarity {pixels:.3f} (copies from {COPY_PIXELS:.3f})"
    return bool(verdict), reason


# ------------------------------------------------------------------------------------------------ pixels
# A copy is also the photo's pixels again. Both faces come as the recognizer's aligned crops (the 5 keypoints undo
# a crop or a resize; a mirrored photo's crop is the photo's crop flipped), but the detector places the keypoints
# a pixel or two differently on each copy - enough to hide a copy among genuine photos of one session. So the
# candidate's grey crop, at half resolution, is registered onto the reference's (and onto its mirror image) by an
# affine Lucas-Kanade fit, and compared by normalised cross-correlation: measured copies (re-encoded, resized,
# mirrored, cropped) reach 0.979-1.0, genuine photos of the person showing another expression stay below 0.983 in
# 99.5 % of pairs (an expression is not an affine change). Threshold:
# the 99.5th percentile of genuine pairs showing different expressions, on one half of the people of the posed
# sources (tools/measure_pixel_copies.py; docs/judge.md, "Copy checks").
COPY_PIXELS = 0.983
PIXEL_FACTOR = 2  # 112 -> 56: re-encoding noise and sub-pixel resampling fade
PIXEL_MARGIN = 6  # pixels (at 56) left around the compared window, for the registration to move in
PIXEL_ITERATIONS = 30
PIXEL_WARP = 0.15  # the most the registration may scale, rotate or shear: alignment already did the rest
_LUMA = np.array([0.299, 0.587, 0.114])
_REACH = np.array([PIXEL_WARP, PIXEL_WARP, PIXEL_MARGIN, PIXEL_WARP, PIXEL_WARP, PIXEL_MARGIN])
_LOWEST, _HIGHEST = np.array([1.0, 0, 0, 0, 1.0, 0]) - _REACH, np.array([1.0, 0, 0, 0, 1.0, 0]) + _REACH


def grey_crop(crop_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An aligned RGB uint8 crop -> its luma at 1/PIXEL_FACTOR resolution (float64, block means) and where that
    lies inside the photo (alignment fills what lies outside the photo with black: a cropped copy cut into the
    face, or a photo whose face touches its edge)."""
    crop = np.asarray(crop_rgb)
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1] or crop.shape[0] < 8 * PIXEL_FACTOR:
        raise ValueError(f"an aligned face crop is a square RGB image of at least {8 * PIXEL_FACTOR} pixels; got an "
                         f"array of shape {crop.shape}")
    n = crop.shape[0] // PIXEL_FACTOR

    def blocks(values):
        return values[: n * PIXEL_FACTOR, : n * PIXEL_FACTOR].reshape(n, PIXEL_FACTOR, n, PIXEL_FACTOR)

    inside = blocks(crop.max(axis=2) > 0).all(axis=(1, 3))
    return blocks(crop.astype(np.float64) @ _LUMA).mean(axis=(1, 3)), inside


def _standardised(values: np.ndarray) -> np.ndarray:
    values = values - values.mean()
    return values / (np.sqrt((values * values).mean()) + 1e-9)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float((_standardised(a) * _standardised(b)).mean()) if a.size > 1 else 0.0


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at (x, y), held at the border."""
    h, w = image.shape
    x = np.clip(x, 0, w - 1.001)
    y = np.clip(y, 0, h - 1.001)
    x0, y0 = x.astype(int), y.astype(int)
    fx, fy = x - x0, y - y0
    return (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x0 + 1] * fx * (1 - fy)
            + image[y0 + 1, x0] * (1 - fx) * fy + image[y0 + 1, x0 + 1] * fx * fy)


def _registered_correlation(candidate, candidate_inside, reference, reference_inside, gradients) -> float:
    """Correlation of the reference's central window with the candidate warped onto it, over the pixels inside
    both photos: the best whole-pixel shift, then Gauss-Newton on an affine warp (forward additive Lucas-Kanade on
    standardised intensities) kept near the identity - a copy needs a small correction; a free warp would bend any
    pattern towards any other."""
    n, m = reference.shape[0], PIXEL_MARGIN
    window, window_inside = reference[m:n - m, m:n - m], reference_inside[m:n - m, m:n - m]

    def shifted(dx, dy):
        keep = window_inside & candidate_inside[m + dy:n - m + dy, m + dx:n - m + dx]
        return _correlation(candidate[m + dy:n - m + dy, m + dx:n - m + dx][keep], window[keep])

    reach = range(-m // 2, m // 2 + 1)
    dx, dy = max(((dx, dy) for dy in reach for dx in reach), key=lambda s: shifted(*s))
    centre = (n - 1) / 2
    ys, xs = np.mgrid[m:n - m, m:n - m].astype(np.float64) - centre
    inside_mask = candidate_inside.astype(np.float64)
    p = np.array([1.0, 0.0, dx, 0.0, 1.0, dy])
    grad_y, grad_x = gradients

    def warp():  # the window's pixels in the candidate, those inside both photos
        x = p[0] * xs + p[1] * ys + p[2] + centre
        y = p[3] * xs + p[4] * ys + p[5] + centre
        keep = window_inside & (_sample(inside_mask, x, y) > 0.999)
        return x[keep], y[keep], keep

    for _ in range(PIXEL_ITERATIONS):
        x, y, keep = warp()
        if keep.sum() < 16:
            return 0.0
        warped = _sample(candidate, x, y)
        spread = warped.std() + 1e-9
        residual = (warped - warped.mean()) / spread - _standardised(window[keep])
        gx, gy = _sample(grad_x, x, y) / spread, _sample(grad_y, x, y) / spread
        u, v = xs[keep], ys[keep]
        jacobian = np.stack([gx * u, gx * v, gx, gy * u, gy * v, gy], axis=-1)
        jacobian -= jacobian.mean(axis=0)  # the warped window's mean is taken out too
        step = np.linalg.lstsq(jacobian.T @ jacobian, -jacobian.T @ residual, rcond=None)[0]
        p = np.clip(p + step, _LOWEST, _HIGHEST)
        if np.abs(step).max() < 1e-3:
            break
    x, y, keep = warp()
    return _correlation(_sample(candidate, x, y), window[keep]) if keep.sum() >= 16 else 0.0


def pixel_similarity(candidate_rgb: np.ndarray, reference_rgb: np.ndarray) -> float:
    """How nearly the candidate face's aligned crop is the reference photo's, or its mirror image: normalised
    cross-correlation (1: the same pixels) after registering the candidate onto it, over what lies inside both
    photos. Both are the recognizer's aligned crops (RGB uint8, the same size)."""
    (candidate, candidate_inside), (reference, reference_inside) = grey_crop(candidate_rgb), grey_crop(reference_rgb)
    if candidate.shape != reference.shape:
        raise ValueError(f"aligned crops of different sizes: {np.asarray(candidate_rgb).shape} and "
                         f"{np.asarray(reference_rgb).shape}; align both with the same face analyzer")
    gradients = np.gradient(candidate)
    return max(_registered_correlation(candidate, candidate_inside, reference, reference_inside, gradients),
               _registered_correlation(candidate, candidate_inside, reference[:, ::-1].copy(),
                                       reference_inside[:, ::-1].copy(), gradients))
