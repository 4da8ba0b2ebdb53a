"""Consistent attention: each image of a batch also attends to some of the other images' tokens, so a
set generated together keeps one identity (StoryDiffusion's consistent self-attention, with
ConsiStory's subject masks and anchors).

One core on (q, k, v) of shape (B, H, L, D) for every host (UNet self-attention, DiT joint
attention). B holds one or more chunks of N images (cond, uncond, ... as ComfyUI's
``cond_or_uncond`` says); chunks never mix. In a chunk, the image-token queries of image i attend
to all of image i's own tokens plus a fraction r of the image tokens of its donors (every other
image, or only the first ``anchors`` images); text queries are unchanged.

Memory stays linear in N: images are processed one at a time, and when the borrowed keys would be
large they are streamed in blocks and merged with log-sum-exp. At N = 1 or r = 0 the given plain
attention function is called as it is, so the result is exactly the unpatched one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import GenAffectInputError
from .attention import attention

log = logging.getLogger(__name__)

# The host's attention (PyTorch SDPA, xformers, ...) is memory-efficient, so one image's own keys plus
# its borrowed keys go to it in one call. Only beyond this many borrowed keys are they streamed, in
# blocks sized so that one block's score matrix stays under SCORE_BUDGET elements.
STREAM_ABOVE = 32768
SCORE_BUDGET = 1 << 26


@dataclass(frozen=True)
class Sharing:
    """What to share: the rate, the anchors, and which tokens are image tokens (and may be borrowed)."""

    rate: float
    image_tokens: slice  # positions of the image tokens in the sequence (the rest is text)
    anchors: int = 0  # 0: every image borrows from all others; a > 0: only from images 0..a-1
    # The person each image shows (crops of several people): an image borrows only from images of its own
    # person, and the anchors are the first of those. None: one person.
    groups: tuple[int, ...] | None = None

    def __post_init__(self):
        if not 0.0 <= self.rate <= 1.0 or math.isnan(self.rate):
            raise GenAffectInputError(f"the sharing rate must be between 0 and 1, got {self.rate}.")
        if self.anchors < 0:
            raise GenAffectInputError(f"anchors must be 0 or more, got {self.anchors}.")

    def donors(self, image: int, images: int) -> list[int]:
        pool = list(range(images))
        if self.groups is not None:
            if len(self.groups) != images:
                raise GenAffectInputError(f"{len(self.groups)} people given for a set of {images} images; give the "
                                          "person of every image (Crop Faces' face_crops, for its crops).")
            pool = [j for j in pool if self.groups[j] == self.groups[image]]
        if self.anchors:
            pool = pool[:self.anchors]
        return [j for j in pool if j != image]

    def shares(self, images: int) -> bool:
        """Whether any image borrows anything (not when the rate is 0 or every image is alone)."""
        return images > 1 and self.rate > 0 and any(self.donors(i, images) for i in range(images))


def make_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """The generator for one step (and block): same seed and step, same borrowed tokens."""
    mixed = (seed * 1_000_003 + step * 9_176 + salt * 7_919) % (2**63 - 1)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(mixed)
    return generator


def choose_borrowed(
    sharing: Sharing,
    images: int,
    chunks: int,
    image_token_count: int,
    generator: torch.Generator,
    token_mask: torch.Tensor | None = None,
) -> list[list[list[tuple[int, torch.Tensor]]]]:
    """For each chunk and receiving image: (donor, positions in the donor's sequence) pairs.

    Each receiver draws, for each donor, round(r x candidates) of the donor's image tokens without
    replacement; candidates are all its image tokens, or those where ``token_mask`` (N, n) is True.
    """
    if token_mask is not None:
        if token_mask.shape != (images, image_token_count):
            raise GenAffectInputError(
                f"the token mask has shape {list(token_mask.shape)}; expected [{images}, {image_token_count}] "
                "(one row per image, one value per image token of this block)."
            )
        candidates = [torch.nonzero(token_mask[j].bool()).flatten() for j in range(images)]
    else:
        candidates = [torch.arange(image_token_count)] * images
    offset = sharing.image_tokens.start or 0
    plan = []
    for _ in range(chunks):
        chunk = []
        for i in range(images):
            pairs = []
            for j in sharing.donors(i, images):
                pool = candidates[j]
                take = int(round(sharing.rate * len(pool)))
                if take == 0:
                    continue
                picked = pool[torch.randperm(len(pool), generator=generator)[:take]]
                pairs.append((j, torch.sort(picked).values + offset))
            chunk.append(pairs)
        plan.append(chunk)
    return plan


def check_batch(batch: int, images: int, sharing: Sharing) -> int:
    """The number of chunks (cond, uncond, ...) in a batch of ``batch`` sequences of ``images`` images."""
    if images < 1 or batch % images:
        raise GenAffectInputError(f"a batch of {batch} is not a whole number of sets of {images} images.")
    if sharing.anchors > images:
        raise GenAffectInputError(
            f"{sharing.anchors} anchor images asked for, but the set has only {images} images; use at most {images}."
        )
    return batch // images


def consistent_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    images: int,
    sharing: Sharing,
    generator: torch.Generator | None = None,
    token_mask: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
    attention=attention,
    plan=None,
    stream_above: int = STREAM_ABOVE,
    stream_block: int | None = None,
) -> torch.Tensor:
    """Attention over (B, H, L, D) tensors with tokens shared across the ``images`` of each chunk.

    ``plan`` (from :func:`choose_borrowed`) may be given to reuse a choice; otherwise it is drawn from
    ``generator``. ``attention(q, k, v, mask)`` is the host's plain attention, used unchanged when
    nothing is shared. ``key_mask`` (B, L), additive, masks each sequence's own keys (a padded text
    encoder, e.g. Qwen-Image's); borrowed keys are image tokens and never masked.
    """
    batch, _, length, _ = q.shape
    chunks = check_batch(batch, images, sharing)
    if not sharing.shares(images):
        return attention(q, k, v, None if key_mask is None else key_mask[:, None, None, :])
    image_slice = sharing.image_tokens
    image_positions = torch.arange(length)[image_slice]
    if len(image_positions) == 0:
        raise GenAffectInputError(f"no image tokens in positions {image_slice} of a sequence of {length}.")
    first, last = int(image_positions[0]), int(image_positions[-1])
    text_positions = torch.cat([torch.arange(0, first), torch.arange(last + 1, length)])
    if plan is None:
        if generator is None:
            raise GenAffectInputError("consistent attention needs a seeded generator (or a plan) to choose tokens.")
        plan = choose_borrowed(sharing, images, chunks, len(image_positions), generator, token_mask)

    out = torch.empty_like(q)
    for c in range(chunks):
        for i in range(images):
            b = c * images + i
            own_k, own_v = k[b:b + 1], v[b:b + 1]
            own_mask = None if key_mask is None else key_mask[b].view(1, 1, 1, length)
            if len(text_positions):
                out[b:b + 1, :, text_positions] = attention(q[b:b + 1, :, text_positions], own_k, own_v, own_mask)
            q_image = q[b:b + 1, :, image_slice]
            sources = [(c * images + j, positions) for j, positions in plan[c][i]]
            borrowed = sum(len(positions) for _, positions in sources)
            if borrowed == 0:
                out[b:b + 1, :, image_slice] = attention(q_image, own_k, own_v, own_mask)
            elif borrowed <= stream_above:
                keys, values = _gathered(k, v, b, sources, borrowed)
                mask = None if own_mask is None else F.pad(own_mask, (0, borrowed))  # borrowed keys: never masked
                out[b:b + 1, :, image_slice] = attention(q_image, keys, values, mask)
            else:
                block = stream_block or max(256, SCORE_BUDGET // (q_image.shape[1] * q_image.shape[2]))
                out[b:b + 1, :, image_slice] = _streamed(q_image, k, v, b, sources, block, own_mask)
    return out


def _gathered(k, v, own, sources, borrowed):
    """One image's own keys and values followed by its borrowed ones, written once into one buffer
    (the borrowed tokens of one donor at a time are the only temporary)."""
    length = k.shape[2]
    keys = k.new_empty(1, k.shape[1], length + borrowed, k.shape[3])
    values = v.new_empty(1, v.shape[1], length + borrowed, v.shape[3])
    keys[:, :, :length], values[:, :, :length] = k[own:own + 1], v[own:own + 1]
    start = length
    for source, positions in sources:
        end = start + len(positions)
        keys[:, :, start:end] = k[source:source + 1, :, positions]
        values[:, :, start:end] = v[source:source + 1, :, positions]
        start = end
    return keys, values


def _partial(q, k, v, mask=None):
    """Softmax attention of q over one block of keys (``mask``: additive, per key), with its log-sum-exp
    for merging."""
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.add_(mask)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    return torch.matmul(scores.sub_(lse).exp_(), v), lse


def _streamed(q, k, v, own, sources, block, own_mask=None):
    """Own keys, then each donor's borrowed keys, in blocks of ``block`` merged by log-sum-exp, so the
    score matrix never exceeds queries x block and borrowed keys are gathered one block at a time."""
    everything = [(own, torch.arange(k.shape[2], device=k.device))] + list(sources)
    out = lse = None
    for source, positions in everything:
        for start in range(0, len(positions), block):
            chosen = positions[start:start + block]
            mask = own_mask[..., chosen].float() if own_mask is not None and source == own else None
            part, part_lse = _partial(q.float(), k[source:source + 1, :, chosen].float(),
                                      v[source:source + 1, :, chosen].float(), mask)
            if out is None:
                out, lse = part, part_lse
                continue
            merged = torch.logaddexp(lse, part_lse)
            out = out * torch.exp(lse - merged) + part * torch.exp(part_lse - merged)
            lse = merged
    return out.to(q.dtype)


# ---- What a host needs around the core: token grids, masks, the step, the per-call settings ----

def token_grid(latent_size: tuple[int, int], tokens: int) -> tuple[int, int]:
    """(rows, columns) of a block's token grid: the latent downscaled by 1, 2, 4, ... rounding up, as
    strided convolutions (UNets) and padded patching (the DiTs) do."""
    height, width = latent_size
    for scale in (1, 2, 4, 8, 16, 32, 64):
        rows, columns = -(-height // scale), -(-width // scale)
        if rows * columns == tokens:
            return rows, columns
    raise GenAffectInputError(
        f"{tokens} image tokens do not form a downscaled grid of the {height}x{width} latent; "
        "this model's token layout is not one consistent attention knows."
    )


def mask_tokens(mask: torch.Tensor, images: int, grid: tuple[int, int]) -> torch.Tensor:
    """A MASK (M, H, W) in 0..1 -> which image tokens may be borrowed, (images, rows x columns) bools.

    A token is borrowable when at least half of its area is inside the mask. One mask serves every
    image; otherwise there must be one per image.
    """
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3 or mask.shape[0] not in (1, images):
        raise GenAffectInputError(
            f"the region mask has shape {list(mask.shape)}; give one mask for all images or one per image "
            f"({images}), each [height, width]."
        )
    if not bool(torch.isfinite(mask).all()):
        raise GenAffectInputError("the region mask holds NaN or infinite values; fix the node that made it.")
    coverage = F.adaptive_avg_pool2d(mask.float().unsqueeze(1), grid).squeeze(1)
    borrowable = (coverage >= 0.5).flatten(1).expand(images, -1).to("cpu")
    empty = [i + 1 for i in range(images) if not bool(borrowable[i].any())]
    if len(empty) == images:  # sharing would silently do nothing
        raise GenAffectInputError(
            f"the region mask covers no image token at this block's {grid[0]}x{grid[1]} grid (an empty mask, or one "
            "smaller than a token); draw the face region larger, or disconnect region to share everywhere.")
    if empty:
        log.warning("GenAffect consistent attention: the region mask of image(s) %s covers no token at a %dx%d grid; "
                    "those images lend nothing there.", empty, *grid)
    return borrowable


def step_index(sigma: float, schedule: torch.Tensor | None) -> int:
    """Which step of the sampling schedule a model call is at (the nearest sigma); 0 without one."""
    if schedule is None or len(schedule) == 0:
        return 0
    return int(torch.argmin((schedule.detach().float().cpu() - float(sigma)).abs()))


@dataclass(frozen=True)
class ConsistencySettings:
    """A node's choices: how much to share, with whom, from where, and the seed for the choice."""

    rate: float
    anchors: int = 0
    seed: int = 0
    region: torch.Tensor | None = None  # MASK (M, H, W): only tokens inside it are borrowed
    groups: tuple[int, ...] | None = None  # the person of each image (see Sharing)

    def __post_init__(self):
        Sharing(self.rate, slice(0, 1), self.anchors)  # validates rate and anchors

    def share(self, q, k, v, *, images: int, image_tokens: slice, latent_size, step: int, salt: int,
              chunk_kinds=None, key_mask=None, attention=attention) -> torch.Tensor:
        """Consistent attention for one call of one block at one step.

        Each chunk draws its tokens from its own kind (ComfyUI's ``cond_or_uncond``: 0 cond, 1 uncond),
        so the result does not depend on whether ComfyUI batched cond and uncond together or not."""
        sharing = Sharing(self.rate, image_tokens, self.anchors, self.groups)
        chunks = check_batch(q.shape[0], images, sharing)
        kinds = list(chunk_kinds) if chunk_kinds is not None and len(chunk_kinds) == chunks else list(range(chunks))
        count = len(range(q.shape[2])[image_tokens])
        token_mask = None
        if self.region is not None:
            token_mask = mask_tokens(self.region, images, token_grid(latent_size, count))
        plan = [choose_borrowed(sharing, images, 1, count, make_generator(self.seed, step, salt + 7_919 * kind),
                                token_mask)[0] for kind in kinds]
        return consistent_attention(q, k, v, images=images, sharing=sharing, plan=plan, key_mask=key_mask,
                                    attention=attention)
