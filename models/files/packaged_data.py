"""The data files that ship inside the pack (models/data/): presets, calibrated targets, the face model."""

from __future__ import annotations

import os

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def data_path(name: str) -> str:
    return os.path.join(DATA_DIR, name)
