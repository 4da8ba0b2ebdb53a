"""Choosing ONNX Runtime execution providers explicitly, and explaining what to do when CUDA is absent.

``onnxruntime`` (CPU, what insightface depends on) and ``onnxruntime-gpu`` install into the same
``onnxruntime/`` folder and overwrite each other; asking for CUDA without a CUDA-capable build or
without the CUDA libraries silently runs on the CPU. So we never rely on defaults: the provider list
is chosen here, and what each session actually uses is read back and reported.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from ..errors import GenAffectInputError

log = logging.getLogger(__name__)

PROVIDER_CHOICES = ("auto", "CUDA", "CPU")
CUDA = "CUDAExecutionProvider"
COREML = "CoreMLExecutionProvider"
CPU = "CPUExecutionProvider"


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def onnxruntime_distributions() -> dict[str, str]:
    """Installed ONNX Runtime distributions (name -> version); two at once is the clash."""
    from importlib import metadata

    found = {}
    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-silicon"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def torch_sees_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available()) and torch.version.cuda is not None
    except Exception:  # a broken torch must not break face analysis
        return False


def gpu_requirement() -> str:
    """The ONNX Runtime CUDA build for this environment: the newest not newer than the installed runtime (the
    CUDA build is often published a little after the CPU one; this one exists whatever the registry holds)."""
    versions = onnxruntime_distributions()
    version = versions.get("onnxruntime-gpu") or versions.get("onnxruntime")
    return f"onnxruntime-gpu<={version}" if version else "onnxruntime-gpu"


def gpu_fix_command() -> str:
    """The command that gives this environment a CUDA-capable ONNX Runtime (docs/install.md)."""
    return f'"{sys.executable}" -m pip install --force-reinstall --no-deps "{gpu_requirement()}"'


def cuda_missing_message() -> str:
    return (
        "ONNX Runtime in this Python has no CUDAExecutionProvider (installed: "
        f"{onnxruntime_distributions() or 'none'}). insightface depends on the CPU build 'onnxruntime', "
        "which shares its folder with 'onnxruntime-gpu'. To run face analysis on an NVIDIA GPU, run:\n  "
        f"{gpu_fix_command()}\nthen restart ComfyUI. Or choose provider 'CPU' (slower, same results)."
    )


@dataclass(frozen=True)
class ProviderChoice:
    requested: str  # one of PROVIDER_CHOICES
    providers: tuple[str, ...]  # what we pass to onnxruntime, in priority order


def choose_providers(requested: str, available: list[str] | None = None) -> ProviderChoice:
    """Turn the node's provider option into an explicit ONNX Runtime provider list.

    ``auto`` prefers CUDA, then CoreML (macOS), then CPU, and warns when an NVIDIA GPU is visible to
    PyTorch but ONNX Runtime cannot use it. ``CUDA`` without a CUDA build is an error with the fix.
    """
    if requested not in PROVIDER_CHOICES:
        raise GenAffectInputError(f"provider must be one of {PROVIDER_CHOICES}, got {requested!r}.")
    available = available_providers() if available is None else list(available)
    if requested == "CPU":
        return ProviderChoice(requested, (CPU,))
    if requested == "CUDA":
        if CUDA not in available:
            raise GenAffectInputError(cuda_missing_message())
        return ProviderChoice(requested, (CUDA, CPU))
    for preferred in (CUDA, COREML):
        if preferred in available:
            return ProviderChoice(requested, (preferred, CPU))
    if torch_sees_cuda():
        log.warning("GenAffect: face analysis runs on the CPU. %s", cuda_missing_message())
    return ProviderChoice(requested, (CPU,))


def check_session_providers(choice: ProviderChoice, model_name: str, in_use: list[str]) -> None:
    """Compare what a session really uses with what was asked; CUDA that fell back is explained."""
    asked = choice.providers[0]
    if asked == CPU or (in_use and in_use[0] == asked):
        return
    message = (
        f"{model_name} asked ONNX Runtime for {asked} but runs on {in_use or 'nothing'}: the provider "
        "is installed but its libraries did not load (for CUDA: CUDA 12 and cuDNN 9 runtime libraries, "
        "which a CUDA build of PyTorch normally provides; check the ComfyUI console for the loader error)."
    )
    if choice.requested == "CUDA":
        raise GenAffectInputError(message + " Choose provider 'CPU' to run anyway.")
    log.warning("GenAffect: %s", message)
