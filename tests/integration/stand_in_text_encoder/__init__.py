"""A stand-in for TextEncodeQwenImageEditPlus in the integration lane (a custom node of the test server only).

Qwen-Image reads text 3,584 wide from Qwen2.5-VL-7B, which no tiny model can replace (ComfyUI builds that
encoder at full size). This node keeps the real node's inputs and output: each word of the prompt becomes
a fixed random token vector (seeded by the word, so equal words give equal tokens and prompts of different
lengths give sequences of different lengths, as the real encoder does), and the images, encoded by the VAE,
are attached as reference latents, as the real node attaches them.
"""

import zlib

import torch

WIDTH = 3584
TEMPLATE = 4  # tokens every prompt starts with, as the edit template's fixed part


def word_tokens(prompt: str) -> torch.Tensor:
    words = ["<template>"] * TEMPLATE + prompt.split()
    rows = [torch.randn(WIDTH, generator=torch.Generator().manual_seed(zlib.crc32(w.encode()))) for w in words]
    return torch.stack(rows)[None] * 0.5


class TinyQwenEditEncode:
    CATEGORY = "testing"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"prompt": ("STRING", {"multiline": True})},
                "optional": {"vae": ("VAE",), "image1": ("IMAGE",), "image2": ("IMAGE",), "image3": ("IMAGE",)}}

    def encode(self, prompt, vae=None, image1=None, image2=None, image3=None):
        extras = {}
        images = [image for image in (image1, image2, image3) if image is not None]
        if vae is not None and images:  # one reference latent per image, in order, as the real node attaches them
            extras["reference_latents"] = [vae.encode(image[:, :, :, :3]) for image in images]
        return ([[word_tokens(prompt), extras]],)


NODE_CLASS_MAPPINGS = {"TinyQwenEditEncode": TinyQwenEditEncode}
