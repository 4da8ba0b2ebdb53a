"""Finding insightface model packs on disk, and explaining exactly how to fix one that is not usable.

insightface keeps a pack as ``<root>/models/<pack>/*.onnx``; ComfyUI users keep theirs in
``ComfyUI/models/insightface/models/antelopev2/``. When the folder is missing insightface tries to
download it, and a nested ``antelopev2/antelopev2/`` unzip ends in a bare ``AssertionError``. We
never hand insightface a folder we have not checked, so both become messages that say what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ModelFileError

DEFAULT_PACK = "antelopev2"
PACK_URLS = {
    # antelopev2 is no longer on insightface's release page; this is the link Arc2Face's README gives.
    "antelopev2": "https://drive.google.com/file/d/18wEUfMNohBJ4K3Ly5wpTejPfDzp-8fI8/view",
    "buffalo_l": "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
}
MODEL_ZOO_URL = "https://github.com/deepinsight/insightface/tree/master/python-package#model-zoo"


def onnx_files(folder: str) -> list[str]:
    """Sorted ``*.onnx`` files directly inside ``folder`` (insightface routes them in this order)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if n.lower().endswith(".onnx") and os.path.isfile(os.path.join(folder, n))]


def _subfolders(folder: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n)))
    except OSError:
        return []


def find_packs(roots: list[str]) -> dict[str, str]:
    """Usable packs under the insightface roots: ``{name: folder}``; the first root wins a name clash."""
    packs: dict[str, str] = {}
    for root in roots:
        models_dir = os.path.join(root, "models")
        for name in _subfolders(models_dir):
            folder = os.path.join(models_dir, name)
            if name not in packs and onnx_files(folder):
                packs[name] = folder
    return packs


def pack_choices(roots: list[str]) -> list[str]:
    """Names for the loader's pack menu: every usable pack, plus the default so a graph stays valid.

    The default is listed even when absent: choosing it then gives the download instructions
    instead of ComfyUI's bare "value not in list".
    """
    names = list(find_packs(roots))
    for root in roots:  # a pack unzipped one level too deep is listed so that loading it explains the fix
        models_dir = os.path.join(root, "models")
        for name in _subfolders(models_dir):
            if name not in names and onnx_files(os.path.join(models_dir, name, name)):
                names.append(name)
    if DEFAULT_PACK not in names:
        names.append(DEFAULT_PACK)
    return sorted(names, key=lambda n: (n != DEFAULT_PACK, n.lower()))


@dataclass(frozen=True)
class PackProblem:
    """Why a pack cannot be used, and the fix, as one message."""

    name: str
    message: str


def diagnose_pack(name: str, roots: list[str]) -> PackProblem | None:
    """None when ``name`` is a usable pack; otherwise what is wrong and how to fix it."""
    if not name or name in (".", "..") or os.sep in name or "/" in name or (os.altsep and os.altsep in name):
        # a pack is a folder name, never a path: nothing outside the model folders is looked at or listed
        return PackProblem(name, f"{name!r} is not a pack name; choose a pack folder under models/insightface/models/.")
    if find_packs(roots).get(name):
        return None
    if not roots:
        return PackProblem(name, "no insightface model folder is registered with ComfyUI.")
    main = roots[0]
    target = os.path.join(main, "models", name)
    url = PACK_URLS.get(name, MODEL_ZOO_URL)
    for root in roots:
        nested = os.path.join(root, "models", name, name)
        if onnx_files(nested):
            return PackProblem(
                name,
                f"the {name} pack was unzipped one level too deep: its .onnx files are in {nested}. "
                f"Move them up into {os.path.dirname(nested)} and delete the empty inner '{name}' folder.",
            )
        flat = os.path.join(root, name)
        if onnx_files(flat):
            return PackProblem(
                name,
                f"the {name} pack is in {flat}, but insightface looks in {os.path.join(root, 'models', name)}. "
                f"Move the '{name}' folder into {os.path.join(root, 'models')}.",
            )
        for zipped in (os.path.join(root, "models", name + ".zip"), os.path.join(root, name + ".zip")):
            if os.path.isfile(zipped):
                return PackProblem(name, f"{zipped} is still zipped. Unzip it so the .onnx files land in {target}.")
        existing = os.path.join(root, "models", name)
        if os.path.isdir(existing):
            content = sorted(os.listdir(existing))[:8]
            return PackProblem(
                name,
                f"{existing} holds no .onnx files (found: {content or 'nothing'}). Download the {name} pack "
                f"from {url} and unzip it so that its .onnx files are directly inside {existing}.",
            )
    searched = ", ".join(os.path.join(r, "models") for r in roots)
    return PackProblem(
        name,
        f"the insightface pack '{name}' was not found (searched: {searched}). Download it from {url} and "
        f"unzip it so that its .onnx files are directly inside {target}.",
    )


def locate_pack(name: str, roots: list[str]) -> str:
    """The folder of a usable pack, or :class:`ModelFileError` with the fix."""
    problem = diagnose_pack(name, roots)
    if problem is not None:
        raise ModelFileError(f"Face analyzer: {problem.message}")
    return find_packs(roots)[name]
