"""Which face of a photo a node uses, and what happens to photos without one (shared by every node
that reads faces from images: identity extraction, expression estimation, metrics)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import GenAffectInputError
from .images import too_small_for_a_face

log = logging.getLogger(__name__)

FACE_ORDERS = ("largest", "highest score", "left to right")
NO_FACE_POLICIES = ("skip", "error")


@dataclass
class SkippedImage:
    image_index: int
    reason: str


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
