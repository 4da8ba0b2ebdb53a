"""Random SMIRK expression-encoder weights in the published checkpoint layout, for tests.

The keys and shapes come from tests/data/smirk_expression_encoder_keys.json (listed from timm).
Values are drawn from a seeded NumPy generator, so the same weights can be rebuilt anywhere; BatchNorm
statistics are random too, so a layer fed the wrong statistics shows in the output.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")  # tests/data
KEYS_FILE = os.path.join(DATA, "smirk_expression_encoder_keys.json")
TIMM_REFERENCE_FILE = os.path.join(DATA, "smirk_timm_reference.json")


def published_keys() -> dict[str, list[int]]:
    with open(KEYS_FILE, encoding="utf-8") as handle:
        return json.load(handle)["keys"]


def published_layout_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in published_keys().items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            value = np.zeros(shape, dtype=np.int64)
        elif leaf == "running_mean":
            value = rng.uniform(-0.5, 0.5, shape)
        elif leaf == "running_var":
            value = rng.uniform(0.5, 2.0, shape)
        elif leaf == "bias":
            value = rng.uniform(-0.2, 0.2, shape)
        elif len(shape) == 1:  # BatchNorm scale
            value = rng.uniform(0.5, 1.5, shape)
        else:  # convolution or linear: He-scaled; the head smaller so that outputs land near the clamps
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
            if "expression_layers" in key:
                value *= 1e-3
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.int64 if leaf == "num_batches_tracked" else np.float32))
    return state


def reference_input(seed: int = 1, count: int = 2, size: int = 224) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(0.0, 1.0, (count, 3, size, size)).astype(np.float32))
