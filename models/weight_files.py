"""Reading and writing weight files safely: safetensors, or published pickles with ``weights_only=True``."""

from __future__ import annotations

import os

import torch

from .errors import ModelFileError


def _flatten(tree, prefix: str, out: dict[str, torch.Tensor], path: str) -> None:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, dict):
            _flatten(value, name + ".", out, path)
        else:
            raise ModelFileError(f"{path} holds a {type(value).__name__} at {name!r}, not weights; is it the right file?")


def read_weights(path: str, hint: str) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from ``path``; nested pickled dicts are joined with ".".

    ``hint`` ends every error message: what the file should be and where to get it again.
    """
    if not os.path.isfile(path):
        raise ModelFileError(f"{path} does not exist. {hint}")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as error:
            raise ModelFileError(f"{path} is not a readable safetensors file ({error}). {hint}") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling refusal, a truncated zip, or not a torch file at all
        raise ModelFileError(
            f"{path} could not be read as a PyTorch checkpoint ({type(error).__name__}: {error}). It is read "
            f"with weights_only=True, which refuses code. {hint}"
        ) from error
    if not isinstance(loaded, dict):
        raise ModelFileError(f"{path} holds a {type(loaded).__name__}, not a dict of weights. {hint}")
    flat: dict[str, torch.Tensor] = {}
    _flatten(loaded, "", flat, path)
    return flat


def write_safetensors(state: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> str:
    """Write ``state`` to ``path`` (its folder made if needed) through a temporary name, so a crash leaves
    no half file."""
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"
    save_file({k: v.contiguous() for k, v in state.items()}, partial, metadata=metadata)
    os.replace(partial, path)
    return path
