"""Reading and writing weight files safely: safetensors, or published pickles with ``weights_only=True``."""

from __future__ import annotations

import os

import torch

from ..errors import ModelFileError


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


def check_weights(state: dict[str, torch.Tensor], path: str, hint: str, counters: tuple[str, ...] = ()) -> None:
    """Refuse a weight that is not floating point (a quantised file) or holds NaN or infinite values, naming the
    first; names ending in ``counters`` (batch-norm step counts) are integers by design."""
    for name, tensor in state.items():
        if name.endswith(counters) and counters:
            continue
        if not torch.is_floating_point(tensor):
            raise ModelFileError(f"{path}: weight {name} is stored as {tensor.dtype}, not floating point (a quantised "
                                 f"file?). {hint}")
        if not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(f"{path}: weight {name} holds NaN or infinite values; the file is damaged. {hint}")


def write_safetensors(state: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> str:
    """Write ``state`` to ``path`` (its folder made if needed) through a temporary name, so a crash leaves
    no half file."""
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"
    save_file({k: v.contiguous() for k, v in state.items()}, partial, metadata=metadata)
    os.replace(partial, path)
    return path


FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def safetensors_layout(path: str, hint: str) -> tuple[dict[str, str], dict[str, tuple[tuple[int, ...], str]]]:
    """(metadata, {name: (shape, dtype string)}) of a safetensors file, read from its header alone: nothing
    is allocated for the weights."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise ModelFileError(f"{path} does not exist. {hint}")
    try:
        with safe_open(path, framework="pt") as handle:
            layout = {}
            for key in handle.keys():
                piece = handle.get_slice(key)
                layout[key] = (tuple(piece.get_shape()), piece.get_dtype())
            return handle.metadata() or {}, layout
    except (SafetensorError, OSError) as error:
        raise ModelFileError(f"{path} is not a readable safetensors file ({error}). {hint}") from error


def check_layout(module: torch.nn.Module, layout: dict, path: str, hint: str) -> torch.dtype:
    """Compare a module built on the meta device (what the metadata describes, no memory used) with the
    file's tensors: the same names, shapes and one floating-point dtype, which is returned."""
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(layout)), sorted(set(layout) - set(expected))
    if missing or unexpected:
        shown = (missing or unexpected)[:3]
        raise ModelFileError(f"{path} does not match what its metadata describes ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected weights, e.g. {shown}); the file is damaged. {hint}")
    for name, shape in expected.items():
        if layout[name][0] != shape:
            raise ModelFileError(f"{path}: weight {name} has shape {list(layout[name][0])}, but the metadata describes "
                                 f"{list(shape)}; the file is damaged. {hint}")
    dtypes = {dtype for _, dtype in layout.values()}
    if not dtypes <= set(FLOAT_DTYPES) or len(dtypes) != 1:
        raise ModelFileError(f"{path} stores its weights as {sorted(dtypes)}; GenAffect reads one of "
                             f"{sorted(FLOAT_DTYPES)} (quantised int8/fp8 files are not supported). {hint}")
    return FLOAT_DTYPES[dtypes.pop()]


def load_checked(module: torch.nn.Module, path: str, dtype: torch.dtype, hint: str) -> torch.nn.Module:
    """Materialise a meta-device ``module`` (already checked by :func:`check_layout`) from ``path``;
    non-finite weights are refused, naming the first."""
    from safetensors.torch import load_file

    state = load_file(path)
    check_weights(state, path, hint)
    module = module.to(dtype).to_empty(device="cpu")  # a meta module changes dtype for free
    module.load_state_dict(state, strict=True)
    return module
