"""Real readings for the expression judge's tests: MediaPipe landmarks of a few labelled photos of people and a
source the shipped judge never trained on (numbers only, no photos), with what the judge read on them when it was
written (tests/data/expression_judge_golden.npz, from tools/train_expression_judge.py --golden)."""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                      "expression_judge_golden.npz")


@lru_cache(maxsize=1)
def golden() -> dict:
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def square_shape(readings: dict, row: int) -> np.ndarray:
    """Row ``row``'s landmarks normalised to a square (pixels over the photo's longer side): the face's true
    proportions, for a test double that places them in a square painted image."""
    height, width = readings["image_size"][row]
    points = readings["landmarks"][row].astype(np.float64) * [width, height, width]
    return (points / max(height, width)).astype(np.float32)
