"""One skeleton for sampling a set: the set's latents and prompts cut to some of its rows, ComfyUI's sampling of
those rows with previews and Cancel, and - with a Sampling Guard - the rounds that decode, score and re-sample
only the rows whose face fails. Each set sampler says only how it patches the model for a round."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ...models.errors import GenAffectInputError
from .. import comfy_host
from ..conditioning_batch import stack_per_image
from .guard import SamplingGuard, run_guarded, unguarded_report


def first_value(value):
    """A node with INPUT_IS_LIST receives every input as a list; its settings are the first entry."""
    return value[0] if isinstance(value, list) else value


def set_size(latent: dict, positive: list) -> int:
    """The number of images of the set: the latent batch, or the number of prompts when the latent batch is 1."""
    samples = latent["samples"]
    return len(positive) if samples.shape[0] == 1 and len(positive) > 1 else samples.shape[0]


def rows_of(value, rows: list[int], images: int):
    """A per-image tensor or list cut to ``rows`` of the set; one shared by every image is kept as it is."""
    if value is None or len(value) == 1 or len(value) != images:
        return value
    return value[rows] if isinstance(value, torch.Tensor) else [value[r] for r in rows]


def latent_rows(latent: dict, rows: list[int], images: int) -> dict:
    """The LATENT for some of the set's images (a guarded round): per-image latents and noise masks cut to
    ``rows``; batch_index is kept only when ``rows`` is the whole set in order (new rounds draw new noise)."""
    part = {key: value for key, value in latent.items() if key not in ("samples", "noise_mask", "batch_index")}
    part["samples"] = rows_of(latent["samples"], rows, images)
    if latent.get("noise_mask") is not None:
        part["noise_mask"] = rows_of(latent["noise_mask"], rows, images)
    if latent.get("batch_index") is not None and rows == list(range(images)):
        part["batch_index"] = latent["batch_index"]
    return part


def latent_set(latent: dict, positive: list, negative: list, images: int | None = None, text_mask: bool = False):
    """(latents, positive, negative) for a set of ``images`` (default: the latent batch, or the number of
    prompts when the latent batch is 1): a batch of 1 is repeated, per-image prompts are stacked
    (``text_mask``: zero-padded with a padding mask, for a model that reads one)."""
    samples = latent["samples"]
    if images is None:
        images = set_size(latent, positive)
    if samples.shape[0] == 1 and images > 1:
        samples = samples.repeat(images, *([1] * (samples.ndim - 1)))
    elif samples.shape[0] != images:
        raise GenAffectInputError(f"the latent batch has {samples.shape[0]} images for a set of {images}; use a "
                                  f"batch of {images}, or of 1 (it is repeated).")
    return (samples, stack_per_image(positive, images, "positive", text_mask),
            stack_per_image(negative, images, "negative", text_mask))


def sample_latents(patched, latent: dict, samples, positive, negative, seed, steps, cfg, sampler_name, scheduler,
                   denoise) -> dict:
    """ComfyUI's sampling of the whole batch at once, with previews and Cancel; returns the LATENT."""
    import comfy.sample
    import comfy.utils
    import latent_preview

    images = samples.shape[0]
    samples = comfy.sample.fix_empty_latent_channels(patched, samples)
    batch_index = latent.get("batch_index") if latent["samples"].shape[0] == images else None
    noise = comfy.sample.prepare_noise(samples, seed, batch_index)
    preview = latent_preview.prepare_callback(patched, steps)

    def callback(step, x0, x, total_steps):
        preview(step, x0, x, total_steps)
        comfy_host.check_interrupted()

    noise_mask = latent.get("noise_mask")
    if noise_mask is not None and noise_mask.shape[0] not in (1, images):
        raise GenAffectInputError(f"the latent's noise mask has {noise_mask.shape[0]} entries for {images} images.")
    out = comfy.sample.sample(
        patched, noise, steps, cfg, sampler_name, scheduler, positive, negative, samples,
        denoise=denoise, noise_mask=noise_mask, callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
    )
    result = {key: value for key, value in latent.items() if key not in ("samples", "batch_index")}
    result["samples"] = out
    return result


# patch(rows, seed, anchors) -> the MODEL that samples those rows of the set, patched for them
Patch = Callable[[list, int, int], object]


@dataclass
class SetSampling:
    """A set and how to sample it: the inputs every round shares (INPUT_IS_LIST values already unwrapped)."""

    latent: dict
    positive: list  # one CONDITIONING for all images, or one per image
    negative: list
    images: int
    text_mask: bool  # the model reads a prompt padding mask (Qwen-Image)
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float
    anchors: int = 0
    positive_values: dict = field(default_factory=dict)  # set on every positive after stacking (FLUX guidance)

    def anchors_for(self, rows: list[int]) -> int:
        """A re-sampled round smaller than the anchors: all of it anchors."""
        return self.anchors if len(rows) >= self.images else min(self.anchors, len(rows))

    def sample_rows(self, patch: Patch, rows: list[int], seed: int, latent: dict) -> dict:
        """The LATENT of ``rows`` of the set (``latent`` already cut to them), sampled as one batch: a round's
        images share tokens with each other only."""
        samples, positive, negative = latent_set(latent, rows_of(self.positive, rows, self.images),
                                                 rows_of(self.negative, rows, self.images), len(rows), self.text_mask)
        if self.positive_values:
            import node_helpers

            positive = node_helpers.conditioning_set_values(positive, self.positive_values)
        return sample_latents(patch(rows, seed, self.anchors_for(rows)), latent, samples, positive, negative, seed,
                              self.steps, self.cfg, self.sampler_name, self.scheduler, self.denoise)

    def sample(self, patch: Patch, seed: int, guard: SamplingGuard | None = None, target=None) -> tuple[dict, str]:
        """The set's LATENT and the guard report: sampled once, or in guarded rounds (``target``: the
        expressions the sampler itself was given, used when the guard has none)."""
        every = list(range(self.images))
        if guard is None:
            return self.sample_rows(patch, every, seed, self.latent), unguarded_report(seed)
        latent_set(self.latent, self.positive, self.negative, self.images, self.text_mask)  # refused up front
        return run_guarded(guard, lambda rows, round_seed: self.sample_rows(
            patch, rows, round_seed, latent_rows(self.latent, rows, self.images))["samples"],
            self.latent, self.images, seed, target=target)
