"""Every model file the pack can use: where it goes, where to get it, its size and licence.

The model check (node and command line) reads this list, and tests keep the README's and docs/models.md's
tables in step with it, so they never disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .packaged_data import data_path

ARC2FACE_HF = "https://huggingface.co/FoivosPar/Arc2Face/blob/main/"


@dataclass(frozen=True)
class ModelFile:
    group: str  # which feature needs it
    folder: str  # ComfyUI model-folder name (models/<folder>/ by default)
    path: str  # where it goes inside that folder
    url: str
    size_mb: float | None  # as published, approximate; a file under half of it is a broken download
    licence: str
    needed_for: str
    optional: bool = False
    also_accepted: tuple[str, ...] = ()  # other "folder/path" places that work (other tools' layouts)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def download_url(self) -> str | None:
        """A URL that downloads the file itself (what a workflow's model metadata offers), or None where the
        source is a page or an archive (Google Drive zips: antelopev2, SMIRK)."""
        if self.url.startswith("https://huggingface.co/") and "/blob/" in self.url:
            return self.url.replace("/blob/", "/resolve/", 1)
        if self.url.startswith("https://storage.googleapis.com/"):
            return self.url
        return None

    @property
    def link(self) -> str:
        """Where a workflow's model metadata points: the file itself, or the page it is got from (the frontend then
        shows the file's folder and a link instead of "Unknown")."""
        return self.download_url or self.url.split()[0]


INSIGHTFACE_LICENCE = "non-commercial research only (insightface)"

CATALOG: tuple[ModelFile, ...] = (
    ModelFile(
        "face analysis", "insightface", "models/antelopev2/scrfd_10g_bnkps.onnx",
        "https://drive.google.com/file/d/18wEUfMNohBJ4K3Ly5wpTejPfDzp-8fI8/view (antelopev2.zip)",
        16.9, INSIGHTFACE_LICENCE, "face detection (GenAffectFaceAnalyzerLoader)",
    ),
    ModelFile(
        "face analysis", "insightface", "models/antelopev2/glintr100.onnx",
        "https://drive.google.com/file/d/18wEUfMNohBJ4K3Ly5wpTejPfDzp-8fI8/view (antelopev2.zip)",
        260.7, INSIGHTFACE_LICENCE, "identity embeddings with recognition 'pack default'",
        optional=True,
    ),
    ModelFile(
        "face analysis", "arc2face", "arcface.onnx", ARC2FACE_HF + "arcface.onnx",
        261.0, "MIT (Arc2Face)", "identity embeddings for Arc2Face (recognition 'arcface.onnx (Arc2Face)')",
        also_accepted=("insightface/models/antelopev2/arcface.onnx",),
    ),
    ModelFile(
        "expression", "mediapipe", "face_landmarker.task",
        "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
        3.7, "Apache-2.0 (Google MediaPipe)", "52 blendshapes, 478 landmarks, head pose",
    ),
    ModelFile(
        "expression", "smirk", "SMIRK_em1.pt",
        "https://drive.google.com/file/d/1T65uEd9dVLHgVw5KiUYL66NUee-MCzoE/view (linked from github.com/georgeretsi/smirk)",
        None, "MIT (SMIRK repository); trained with FLAME, whose model licence is non-commercial",
        "FLAME-55 expression vectors",
        optional=True,
    ),
    ModelFile(
        "Arc2Face", "arc2face", "arc2face/diffusion_pytorch_model.safetensors",
        ARC2FACE_HF + "arc2face/diffusion_pytorch_model.safetensors", 3440.0, "MIT (Arc2Face)",
        "the Arc2Face SD1.5 UNet",
    ),
    ModelFile(
        "Arc2Face", "arc2face", "arc2face/config.json", ARC2FACE_HF + "arc2face/config.json", None,
        "MIT (Arc2Face)", "the UNet's configuration (read by diffusers; GenAffect needs only the weights)",
        optional=True,
    ),
    ModelFile(
        "Arc2Face", "arc2face", "encoder/pytorch_model.bin", ARC2FACE_HF + "encoder/pytorch_model.bin",
        492.0, "MIT (Arc2Face)", "the fine-tuned CLIP text encoder",
    ),
    ModelFile(
        "Arc2Face", "arc2face", "encoder/config.json", ARC2FACE_HF + "encoder/config.json", None,
        "MIT (Arc2Face)", "the encoder's configuration (read by transformers; GenAffect needs only the weights)",
        optional=True,
    ),
    ModelFile(
        "Arc2Face", "arc2face", "exp_adapter/exp_adapter.bin", ARC2FACE_HF + "exp_adapter/exp_adapter.bin",
        78.1, "MIT (Arc2Face)", "Expression Adapter (FLAME-55 cross-attention)", optional=True,
    ),
    ModelFile(
        "Arc2Face", "arc2face", "ref_adapter/pytorch_lora_weights.safetensors",
        ARC2FACE_HF + "ref_adapter/pytorch_lora_weights.safetensors", 51.1, "MIT (Arc2Face)",
        "Reference Adapter LoRA (editing real photos)", optional=True,
    ),
    ModelFile(
        "Arc2Face", "vae", "vae-ft-mse-840000-ema-pruned.safetensors",
        "https://huggingface.co/stabilityai/sd-vae-ft-mse-original/blob/main/vae-ft-mse-840000-ema-pruned.safetensors",
        334.6, "MIT (Stability AI)", "SD1.5 VAE for Arc2Face (any SD1.5 VAE works)", optional=True,
    ),
)

EXPRESSION_NETWORKS = "expression_networks"  # the folder of the pixel judges' ONNX files


def _expression_networks() -> tuple[ModelFile, ...]:
    """The downloadable expression networks (the pixel judge), from their model cards - one home for their
    addresses, sizes and licences (models/data/expression_networks.json)."""
    with open(data_path("expression_networks.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    return tuple(
        ModelFile("expression judge", EXPRESSION_NETWORKS, card["file"], card["url"],
                  round(card["bytes"] / 1e6, 1) if card.get("bytes") else card.get("size_mb"), card["licence"],
                  "pixel judge: " + card["name"] + (" (recommended)" if card["file"] == data["default"] else ""),
                  optional=True)
        for card in data["networks"])


CATALOG += _expression_networks()

# Folders the pack registers with ComfyUI (models/<name>/ by default, next to the user's own entries).
MODEL_FOLDERS = ("insightface", "mediapipe", "smirk", "arc2face", "genaffect", EXPRESSION_NETWORKS)


def catalog_entry(name: str) -> ModelFile:
    """The catalog entry of a file by its name (e.g. "face_landmarker.task"), for messages that name its URL."""
    return next(entry for entry in CATALOG if entry.name == name)
