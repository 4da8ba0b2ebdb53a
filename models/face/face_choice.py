"""Which face of a photo a node uses, and what happens to photos without one (shared by every node
that reads faces from images: identity extraction, face alignment, expression estimation, metrics)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import GenAffectInputError
from ..images import too_small_for_a_face

log = logging.getLogger(__name__)

FACE_ORDERS = ("largest", "highest score", "left to right")
NO_FACE_POLICIES = ("skip", "error")


@dataclass
class SkippedImage:
    image_index: int
    reason: str


@dataclass
class RetriedImage:
    """A photo whose face the first detection pass missed and a retry found (a close-up, usually)."""

    image_index: int
    how: str


def describe_retried(retried: list[RetriedImage]) -> str:
    return "; ".join(f"image {r.image_index}: face {r.how}" for r in retried)


def check_face_choice(face_index: int, on_no_face: str) -> None:
    if on_no_face not in NO_FACE_POLICIES:
        raise GenAffectInputError(f"on_no_face must be one of {NO_FACE_POLICIES}, got {on_no_face!r}.")
    if face_index < 0:
        raise GenAffectInputError(f"face_index must be 0 or more, got {face_index}.")


def too_small_reason(image) -> str | None:
    if too_small_for_a_face(image):
        return f"{image.shape[1]}x{image.shape[0]} pixels is too small to hold a face"
    return None


def no_face_reason(faces_found: int, face_index: int, face_order: str) -> str | None:
    if faces_found == 0:
        return "no face detected"
    if face_index >= faces_found:
        return f"face_index {face_index} asked for, but only {faces_found} face(s) found ({face_order})"
    return None


def describe_skipped(skipped: list[SkippedImage]) -> str:
    return "; ".join(f"image {s.image_index}: {s.reason}" for s in skipped)


def skip_or_fail(index: int, reason: str, on_no_face: str, skipped: list[SkippedImage], what: str = "Image") -> None:
    """Apply the on_no_face policy to an image without a usable face: stop with the fix, or note and skip it."""
    if on_no_face == "error":
        raise GenAffectInputError(f"{what} {index}: {reason}. Use a photo with a visible face, or set on_no_face to 'skip'.")
    log.warning("GenAffect: %s %d skipped: %s.", what.lower(), index, reason)
    skipped.append(SkippedImage(index, reason))


def faces_per_image(images_rgb, detect, *, face_index: int, face_order: str, on_no_face: str,
                    skipped: list[SkippedImage], what: str = "Image", on_progress=None,
                    retried: list[RetriedImage] | None = None):
    """The one loop over a node's photos: yields ``(index, faces, usable)`` for each, ``faces`` as
    ``detect(index, rgb)`` returns them - ``(faces in face_order, how)``, ``how`` empty unless a detection retry
    found them (noted in ``retried`` and the log) - (none for a photo too small to hold a face) and ``usable``
    when face ``face_index`` exists. Photos without it stop the node or are noted in ``skipped``, as
    ``on_no_face`` says; progress moves after each photo is handled."""
    check_face_choice(face_index, on_no_face)
    for index, rgb in enumerate(images_rgb):
        faces = []
        reason = too_small_reason(rgb)
        if reason is None:
            faces, how = detect(index, rgb)
            if how:
                log.info("GenAffect: %s %d: face %s.", what.lower(), index, how)
                if retried is not None:
                    retried.append(RetriedImage(index, how))
            reason = no_face_reason(len(faces), face_index, face_order)
        if reason is not None:
            skip_or_fail(index, reason, on_no_face, skipped, what)
        yield index, faces, reason is None
        if on_progress is not None:
            on_progress(index + 1, len(images_rgb))
