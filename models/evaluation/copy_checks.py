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
  within :data:`COPY_SHAPE` of that photo's: the same person with the same face shape, pose and expression.
"""

from __future__ import annotations

# Chosen on one half of the people of three public posed sources (JAFFE, KDEF, the Taiwanese corpus; split by a
# hash of their id, tools/measure_judge.py) from genuine pairs of one person's photos showing different
# expressions: COPY_COSINE_ALONE is their 99.5th percentile (0.921), COPY_SHAPE about their 1st percentile. The
# rates - false positives on the other half's genuine photos, hits on copies of that half's photos - are in
# docs/judge.md, "Copy checks".
COPY_COSINE_ALONE = 0.92
COPY_COSINE = 0.80
COPY_SHAPE = 0.030  # RMS landmark distance, in units of the face's size (the judge's pose-normalised frame)


def copied(nearest_cosine: float | None, shape_distance: float | None) -> tuple[bool | None, str]:
    """(copied?, the numbers that decided) for one face: its highest ArcFace cosine to a reference photo and,
    when known, its landmark distance to the nearest reference photo's. None: no face to judge."""
    if nearest_cosine is None:
        return None, ""
    identity = f"identity cosine {nearest_cosine:.3f} (copies from {COPY_COSINE_ALONE:.2f}"
    if shape_distance is None:
        return nearest_cosine >= COPY_COSINE_ALONE, identity + "; no reference landmarks to compare)"
    verdict = nearest_cosine >= COPY_COSINE_ALONE or (nearest_cosine >= COPY_COSINE and shape_distance <= COPY_SHAPE)
    return verdict, (identity + f", or from {COPY_COSINE:.2f} with a face shape distance up to {COPY_SHAPE:.3f}), "
                     f"face shape distance {shape_distance:.4f}")
