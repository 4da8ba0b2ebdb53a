"""Synthetic training data for the trainer's tests: shards in the trainer's format whose latents are a fixed
function of identity and expression (so learning from the conditions shows in the loss), fixed text embeddings, a
small adapter size and quick settings; a tiny VAE and text encoder for the data-set builders' tests."""

from __future__ import annotations

import os

import torch
from genaffect.training.dataset import Face, write_shard
from genaffect.training.trainer import TrainSettings
from tiny_dit import TEXT_WIDTH

ADAPTER = dict(token_width=32, identity_tokens=4, expression_tokens=4, heads=2, head_dim=16, resampler_depth=1)


def random_text(captions, length: int = 6, masked: bool = False):
    """Fixed text embeddings per caption (the text encoder is not what these tests are about); ``masked``:
    with Qwen-Image's padding mask, the last caption one token shorter."""
    g = torch.Generator().manual_seed(sum(map(ord, "".join(captions))))
    text = {"prompt_embeds": torch.randn(len(captions), length, TEXT_WIDTH, generator=g)}
    if masked:
        text["prompt_mask"] = torch.ones(len(captions), length, dtype=torch.int64)
        text["prompt_mask"][-1, -1] = 0
    else:
        text["pooled_prompt_embeds"] = torch.randn(len(captions), TEXT_WIDTH, generator=g)
    return text


def synthetic_shards(folder, persons=4, per_person=16, seed=0, channels=4, side=8, family=None,
                     encode_text=random_text, name="shard-00000.safetensors") -> str:
    """Shards in which each latent channel's level is a fixed function of the identity and the expression;
    ``per_person``: faces of each person (one number for all, or a list)."""
    g = torch.Generator().manual_seed(seed)
    identities = torch.nn.functional.normalize(torch.randn(persons, 512, generator=g), dim=-1)
    from_identity, from_expression = torch.randn(512, channels, generator=g), torch.randn(52, channels, generator=g) / 2
    faces, latents = [], []
    counts = per_person if isinstance(per_person, list) else [per_person] * persons
    for person, count in enumerate(counts):
        for _ in range(count):
            blendshapes = torch.rand(52, generator=g)
            level = identities[person] @ from_identity + (blendshapes - 0.5) @ from_expression
            latent = torch.tanh(level).view(channels, 1, 1).expand(channels, side, side)
            faces.append(Face(person=f"p{person}", origin="synthetic", caption="a face", image=None,
                              identity=identities[person].numpy(), blendshapes=blendshapes.numpy(), flame=None))
            latents.append(latent)
    write_shard(os.path.join(folder, name), faces, torch.stack(latents), [f"p{p}" for p in range(persons)],
                encode_text, family)
    return str(folder)


def settings(output, **changes) -> TrainSettings:
    values = dict(output=str(output), steps=120, batch_size=8, learning_rate=5e-3, mixed_precision="no",
                  gradient_checkpointing=True, checkpoint_every=60, sample_every=1000, log_every=20, eval_items=16,
                  workers=0, seed=0)
    return TrainSettings(**{**values, **changes})


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16),
                         latent_channels=4, norm_num_groups=4, sample_size=64).eval()


def tiny_text_encoder():
    """A tiny T5 encoder with ByT5's byte tokenizer (no vocabulary file): captions -> embeddings, pooled."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    torch.manual_seed(0)
    tokenizer = ByT5Tokenizer()
    encoder = T5EncoderModel(T5Config(vocab_size=384, d_model=TEXT_WIDTH, d_kv=8, d_ff=64, num_layers=1,
                                      num_heads=2)).eval()

    def encode(captions):
        ids = tokenizer(captions, padding="max_length", max_length=6, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            hidden = encoder(ids).last_hidden_state
        return {"prompt_embeds": hidden, "pooled_prompt_embeds": hidden.mean(dim=1)}

    return encode
