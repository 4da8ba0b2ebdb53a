"""Which model files are found, missing, misplaced or broken, and what to do about each.

Shared by the ``GenAffectCheckModels`` node and ``python -m models.doctor``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .model_catalog import CATALOG, ModelFile

FOUND, MISSING, MISPLACED, BROKEN = "found", "missing", "misplaced", "broken"
_MAX_DEPTH = 6


@dataclass
class FileStatus:
    entry: ModelFile
    state: str
    path: str  # where it was found, or where it belongs when missing/misplaced
    detail: str = ""


def _match_key(relative_path: str) -> tuple[str, ...]:
    """The trailing path parts that identify a file: generic names (config.json) keep their folder."""
    parts = tuple(relative_path.replace("\\", "/").split("/"))
    return parts[-2:] if len(parts) >= 2 else parts


def _walk_files(search_dirs: list[str], wanted: set[str]) -> dict[str, list[str]]:
    """Every file under ``search_dirs`` whose name is in ``wanted`` (depth-limited, hidden folders skipped)."""
    found: dict[str, list[str]] = {}
    seen: set[str] = set()
    for top in search_dirs:
        top = os.path.realpath(top)
        if top in seen or not os.path.isdir(top):
            continue
        seen.add(top)
        base_depth = top.count(os.sep)
        for folder, dirs, files in os.walk(top, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            if folder.count(os.sep) - base_depth >= _MAX_DEPTH:
                dirs[:] = []
            for name in files:
                if name in wanted:
                    found.setdefault(name, []).append(os.path.join(folder, name))
    return found


def _size_problem(entry: ModelFile, path: str) -> str:
    size = os.path.getsize(path)
    if entry.size_mb and size < entry.size_mb * 1e6 * 0.5:
        return f"only {size / 1e6:.1f} MB, expected about {entry.size_mb:g} MB: an incomplete download"
    return ""


def check_models(
    roots: dict[str, list[str]],
    search_dirs: list[str],
    catalog: tuple[ModelFile, ...] = CATALOG,
) -> list[FileStatus]:
    """Status of every catalog file. ``roots`` maps a model-folder name to its folders, first = default."""
    index = _walk_files(search_dirs, {entry.name for entry in catalog})
    statuses = []
    for entry in catalog:
        folder_roots = roots.get(entry.folder) or []
        places = [os.path.join(r, entry.path) for r in folder_roots]
        for accepted in entry.also_accepted:
            folder, _, rest = accepted.partition("/")
            places += [os.path.join(r, rest) for r in roots.get(folder) or []]
        target = places[0] if places else os.path.join("models", entry.folder, entry.path)
        hit = next((p for p in places if os.path.isfile(p)), None)
        if hit is not None:
            problem = _size_problem(entry, hit)
            statuses.append(FileStatus(entry, BROKEN if problem else FOUND, hit, problem))
            continue
        correct = {os.path.realpath(p) for p in places}
        key = _match_key(entry.path)
        elsewhere = [
            p for p in index.get(entry.name, [])
            if os.path.realpath(p) not in correct and _match_key(p)[-len(key):] == key
        ]
        if elsewhere:
            statuses.append(FileStatus(entry, MISPLACED, target, f"found at {elsewhere[0]}; move it to {target}"))
        else:
            statuses.append(FileStatus(entry, MISSING, target))
    return statuses


def format_report(statuses: list[FileStatus], header: str = "") -> str:
    """A plain-text report, grouped by feature, with the fix for every file that is not found."""
    lines = [header] if header else []
    for group in dict.fromkeys(s.entry.group for s in statuses):
        lines.append(f"[{group}]")
        for status in (s for s in statuses if s.entry.group == group):
            entry = status.entry
            tag = status.state.upper() + (" (optional)" if entry.optional and status.state == MISSING else "")
            lines.append(f"  {tag:<20} {entry.folder}/{entry.path}  - {entry.needed_for}")
            if status.state == FOUND:
                lines.append(f"  {'':<20} at {status.path}")
            elif status.state == MISSING:
                size = f", {entry.size_mb:g} MB" if entry.size_mb else ""
                lines.append(f"  {'':<20} download: {entry.url} ({entry.licence}{size})")
                lines.append(f"  {'':<20} put it at: {status.path}")
            else:
                lines.append(f"  {'':<20} {status.detail}")
                if status.state == BROKEN:
                    lines.append(f"  {'':<20} download again: {entry.url}")
    counts = {state: sum(s.state == state for s in statuses) for state in (FOUND, MISSING, MISPLACED, BROKEN)}
    required_missing = sum(s.state != FOUND and not s.entry.optional for s in statuses)
    lines.append(
        f"{counts[FOUND]} found, {counts[MISSING]} missing, {counts[MISPLACED]} misplaced, {counts[BROKEN]} broken; "
        f"{required_missing} needed file(s) not usable."
    )
    return "\n".join(lines)


@dataclass(frozen=True)
class RouteStatus:
    """Whether one way of using GenAffect can run with the files found, and why not."""

    key: str  # what ``python -m models.doctor --routes`` takes
    title: str
    ready: bool
    detail: str


ROUTES = ("face", "expression", "arc2face", "dit", "editors")
GENAFFECT_FILES = (".safetensors",)


def _missing(statuses: list[FileStatus], group: str, *, folder: str | None = None) -> list[str]:
    return [f"{s.entry.folder}/{s.entry.path} {s.state}" for s in statuses
            if s.entry.group == group and not s.entry.optional and s.state != FOUND
            and (folder is None or s.entry.folder == folder)]


def check_routes(statuses: list[FileStatus], roots: dict[str, list[str]]) -> list[RouteStatus]:
    """Each route ready or not, from the file statuses and what is installed: any usable insightface pack
    (antelopev2, buffalo_l, buffalo_sc, ...) serves face analysis, any adapter file in models/genaffect/
    the DiT route."""
    from .insightface_packs import find_packs

    packs = find_packs(roots.get("insightface", []))
    face = RouteStatus("face", "face analysis", bool(packs),
                       f"pack {', '.join(packs)}" if packs else "no insightface pack with its .onnx files in "
                       "insightface/models/<pack>/ (antelopev2 or buffalo_l; see the files below)")
    expression_missing = _missing(statuses, "expression")
    expression = RouteStatus("expression", "expression estimation", not expression_missing,
                             "; ".join(expression_missing) or "MediaPipe's landmarker found")
    arc2face_missing = _missing(statuses, "Arc2Face") + _missing(statuses, "face analysis", folder="arc2face")
    if not packs:
        arc2face_missing.append("an insightface pack (face detection)")
    arc2face = RouteStatus("arc2face", "Arc2Face", not arc2face_missing,
                           "; ".join(arc2face_missing) or "UNet, text encoder and arcface.onnx found")
    adapters = [os.path.join(directory, name) for root in roots.get("genaffect", [])
                for directory, _, files in os.walk(root) if os.sep + "mappings" not in directory + os.sep
                for name in files if name.endswith(GENAFFECT_FILES)]
    dit = RouteStatus("dit", "DiT adapter", bool(adapters),
                      f"{len(adapters)} adapter file(s) in genaffect/" if adapters else
                      "no adapter in genaffect/: train one (docs/training.md)")
    loras = [name for root in roots.get("loras", []) if os.path.isdir(root) for name in os.listdir(root)
             if name.lower().startswith("pixelsmile")]
    editors = RouteStatus("editors", "instruction editors", True,
                          "GenAffect needs no file of its own (ComfyUI loads the editor); PixelSmile LoRA: "
                          + (", ".join(loras) if loras else "not found (optional)"))
    return [face, expression, arc2face, dit, editors]


def format_routes(routes: list[RouteStatus]) -> str:
    lines = ["Routes:"]
    for route in routes:
        lines.append(f"  {route.title:<22} {'READY' if route.ready else 'NOT READY'}: {route.detail}")
    return "\n".join(lines)


def onnxruntime_report() -> str:
    """One line on ONNX Runtime: installed distributions and usable providers (the CUDA clash shows here)."""
    from .onnx_providers import available_providers, cuda_missing_message, onnxruntime_distributions, torch_sees_cuda

    try:
        providers = available_providers()
    except ImportError:
        return "onnxruntime: not installed; run pip install -r requirements.txt in ComfyUI's Python."
    distributions = onnxruntime_distributions()
    line = f"onnxruntime: {distributions}; providers: {', '.join(providers)}"
    if len(distributions) > 1:
        line += "\n  two ONNX Runtime builds share one folder; the last installed wins (see docs/install.md, 'GPU face analysis')."
    if torch_sees_cuda() and "CUDAExecutionProvider" not in providers:
        line += "\n  " + cuda_missing_message()
    return line
