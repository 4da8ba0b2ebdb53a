"""The copy checks decide by closeness: on hand-built distributions with known shares above and below the measured
thresholds, the rates come out as built - whatever the number of reference photos, unlike the old rank rule."""

from __future__ import annotations

import numpy as np
import pytest
from genaffect.models.evaluation import copy_checks
from genaffect.models.evaluation.copy_checks import COPY_COSINE, COPY_COSINE_ALONE, COPY_SHAPE, copied


def _rate(cosines, shapes=None) -> float:
    shapes = [None] * len(cosines) if shapes is None else shapes
    return float(np.mean([copied(c, s)[0] for c, s in zip(cosines, shapes)]))


def test_genuine_photos_are_flagged_at_exactly_the_built_share_and_copies_always():
    rng = np.random.default_rng(0)
    # 1,000 genuine photos of the person: 1 % nearly the photo's pixels (cosine above the identity-alone
    # threshold), 30 % between the two cosine thresholds and of those one in ten with a face shape as close as a
    # copy's - 4 % in all must be flagged
    near = rng.uniform(COPY_COSINE_ALONE, 1.0, 10)
    high = rng.uniform(COPY_COSINE, COPY_COSINE_ALONE - 1e-3, 300)
    low = rng.uniform(0.2, COPY_COSINE - 1e-3, 690)
    shapes_near = rng.uniform(COPY_SHAPE + 1e-4, 0.3, 10)  # however different its shape
    shapes_high = np.r_[rng.uniform(0.0, COPY_SHAPE, 30), rng.uniform(COPY_SHAPE + 1e-4, 0.3, 270)]
    shapes_low = rng.uniform(0.0, 0.3, 690)
    genuine = _rate(np.r_[near, high, low], np.r_[shapes_near, shapes_high, shapes_low])
    assert genuine == pytest.approx(0.04, abs=1e-9)
    assert _rate(np.r_[near, high, low]) == pytest.approx(0.01, abs=1e-9)  # without the photo's landmarks
    # copies: the photo again (cosine near 1, shape distance near 0, as measured on exact, re-encoded, resized,
    # mirrored and cropped copies) are all flagged, with or without the photo's landmarks
    cos = rng.uniform(COPY_COSINE_ALONE, 1.0, 500)
    assert _rate(cos, rng.uniform(0.0, COPY_SHAPE, 500)) == 1.0 and _rate(cos) == 1.0


def test_the_rate_does_not_depend_on_how_many_references_there_are():
    """The old rule flagged a genuine photo whenever it beat the references' own best pair - 2/(k+1) of the time
    with k references, by construction. Closeness gives the same verdicts for k = 2, 3 or 5."""
    rng = np.random.default_rng(1)
    # 6 photos of each of 2,000 people, spread like real ones (cosine 0.47 / 0.70 / 0.84 at 5, 50, 95 %; measured
    # on another expression: 0.53 / 0.70 / 0.87)
    photos = rng.normal(size=(2000, 6, 24)) + 1.5 * rng.normal(size=(2000, 1, 24))
    photos /= np.linalg.norm(photos, axis=-1, keepdims=True)
    cosines = np.einsum("npd,nqd->npq", photos, photos)
    for k in (2, 3, 5):
        new_photo = cosines[:, k, :k].max(axis=1)  # the new photo's best match among the k references
        references = np.array([c[:k, :k][np.triu_indices(k, 1)].max() for c in cosines])  # their own best pair
        rank_rule = float((new_photo > references).mean())
        assert rank_rule == pytest.approx(2 / (k + 1), abs=0.04)  # the old rule: a question of rank
        flagged = _rate(new_photo)
        assert flagged == pytest.approx(float((new_photo >= COPY_COSINE_ALONE).mean()))  # the new: how close
        assert flagged < rank_rule / 3


def test_the_verdict_names_the_numbers_that_decided():
    verdict, reason = copied(0.85, 0.004)
    assert verdict is True and "identity cosine 0.850" in reason and "face shape distance 0.0040" in reason
    assert copied(0.85, 0.2)[0] is False
    verdict, reason = copied(0.97, None)
    assert verdict is (0.97 >= COPY_COSINE_ALONE) and "no reference landmarks" in reason
    assert copied(None, None) == (None, "")
    assert copy_checks.COPY_SHAPE > 0 and COPY_COSINE < COPY_COSINE_ALONE
