"""Arc2Face: where its published files live, and its identity prompt (github.com/foivospar/Arc2Face, read at 8f3acd7).

The prompt is "photo of a id person"; the input embedding of the ``id`` token is replaced by the
ArcFace vector zero-padded to the text width, and Arc2Face's fine-tuned CLIP encodes the result.
Position embeddings are added after the replacement, inside the encoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import GenAffectInputError, ModelFileError
from ..files.model_catalog import CATALOG
from ..files.model_check import FOUND, check_models, format_report

PROMPT = "photo of a id person"
ID_WORD = "id"
ARCFACE_SIZE = 512
RECOGNITION_FILE = "arcface.onnx"

# Conversions the loader may write next to the published pickles, preferred when present.
CONVERTED = {"encoder/pytorch_model.bin": "encoder/model.safetensors",
             "exp_adapter/exp_adapter.bin": "exp_adapter/exp_adapter.safetensors"}


def identity_vector(embedding: np.ndarray, width: int) -> torch.Tensor:
    """The ``id`` token's input embedding: the L2-normalised ArcFace vector, zero-padded to ``width``."""
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vector.shape[0] != ARCFACE_SIZE:
        raise GenAffectInputError(f"Arc2Face takes a {ARCFACE_SIZE}-d ArcFace embedding; this identity has "
                                  f"{vector.shape[0]} values.")
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(vector).all() or norm == 0:
        raise GenAffectInputError("the identity embedding is empty or not finite (NaN); extract it again with "
                                  "GenAffect Extract Identity.")
    if width < ARCFACE_SIZE:
        raise GenAffectInputError(f"this text encoder's tokens are {width} wide, narrower than ArcFace's "
                                  f"{ARCFACE_SIZE}; Arc2Face needs its own CLIP ViT-L encoder (768).")
    padded = torch.zeros(width, dtype=torch.float32)
    padded[:ARCFACE_SIZE] = torch.from_numpy(vector / norm)
    return padded


def place_identity(tokens: dict, id_token: int, vector: torch.Tensor) -> dict:
    """ComfyUI tokens with every ``id_token`` replaced by ``vector`` (the textual-inversion slot).

    ``tokens`` maps an encoder name to rows of ``(token, weight, ...)`` tuples; the returned copy keeps
    the weights and any extra fields.
    """
    placed, count = {}, 0
    for name, rows in tokens.items():
        placed[name] = []
        for row in rows:
            new_row = []
            for entry in row:
                if not torch.is_tensor(entry[0]) and entry[0] == id_token:
                    entry = (vector,) + tuple(entry[1:])
                    count += 1
                new_row.append(entry)
            placed[name].append(new_row)
    if count == 0:
        raise GenAffectInputError(f"the prompt has no {ID_WORD!r} token to carry the identity; it must contain "
                                  f"the word {ID_WORD!r}, as in {PROMPT!r}.")
    return placed


# --- files -------------------------------------------------------------------------------------------

ARC2FACE_ENTRIES = tuple(entry for entry in CATALOG if entry.group == "Arc2Face" and entry.folder == "arc2face")


@dataclass(frozen=True)
class Arc2FaceFiles:
    unet: str
    encoder: str
    expression_adapter: str | None  # None when not downloaded (an optional part)
    reference_lora: str | None
    missing: dict[str, str]  # optional file path -> its report lines (download, folder), when not found


UNET, ENCODER = "arc2face/diffusion_pytorch_model.safetensors", "encoder/pytorch_model.bin"
EXPRESSION_ADAPTER, REFERENCE_LORA = "exp_adapter/exp_adapter.bin", "ref_adapter/pytorch_lora_weights.safetensors"


def _usable_path(status, roots: list[str]) -> str | None:
    """Where a file can be read from: its safetensors conversion when present, else the file itself."""
    alternative = CONVERTED.get(status.entry.path)
    for root in roots if alternative else ():
        if os.path.isfile(os.path.join(root, alternative)):
            return os.path.join(root, alternative)
    return status.path if status.state == FOUND else None


def locate_files(roots: list[str], search_dirs: list[str]) -> Arc2FaceFiles:
    """The Arc2Face files under the ``arc2face`` model folders ``roots`` (the default one first).

    A missing, misplaced or truncated required file raises with its download address and the folder
    it belongs in; ``search_dirs`` are walked to recognise a misplaced file.
    """
    statuses = check_models({"arc2face": roots}, search_dirs, ARC2FACE_ENTRIES)
    paths = {s.entry.path: _usable_path(s, roots) for s in statuses}
    unusable = [s for s in statuses if paths[s.entry.path] is None and not s.entry.optional]
    if unusable:
        raise ModelFileError(
            "Arc2Face is not installed completely:\n" + format_report(unusable) +
            f"\nKeep the published layout of huggingface.co/FoivosPar/Arc2Face under {roots[0]}."
        )
    return Arc2FaceFiles(
        unet=paths[UNET], encoder=paths[ENCODER],
        expression_adapter=paths[EXPRESSION_ADAPTER], reference_lora=paths[REFERENCE_LORA],
        missing={s.entry.path: format_report([s]) for s in statuses if paths[s.entry.path] is None},
    )
