"""Which condition each row of a model call takes, the one rule every adapter follows.

ComfyUI batches a model call as chunks of N images, one chunk per kind of conditioning
(``cond_or_uncond``: 0 = the positive prompt). An adapter's conditions (expressions, reference photos)
belong to the positive rows only: image i takes condition i, or every image the single one; the other
rows (the negative prompt of classifier-free guidance) take none.
"""

from __future__ import annotations

from ..errors import GenAffectInputError


def condition_rows(chunk_kinds, images: int, conditions: int, what: str) -> list[int | None]:
    """For every row of a batch of ``len(chunk_kinds)`` chunks x ``images``, the index of the condition it
    takes, or None; ``conditions`` other than 1 or ``images`` are refused, naming ``what`` they are."""
    if conditions not in (1, images):
        raise GenAffectInputError(
            f"{conditions} {what} for a batch of {images} images: image i takes number i, so give one per image (a "
            f"latent batch of {conditions}), or a single one for all of them."
        )
    per_image = [0 if conditions == 1 else i for i in range(images)]
    return [row for kind in chunk_kinds for row in (per_image if kind == 0 else [None] * images)]
