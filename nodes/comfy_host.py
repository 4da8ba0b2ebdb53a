"""The few things nodes need from ComfyUI, imported lazily so the node layer runs without it.

Inside ComfyUI these are ``folder_paths``, ``comfy.utils.ProgressBar`` and the interruption check.
Outside (tests, scripts) model folders come from ``$GENAFFECT_MODELS_DIR/<folder>`` and progress
and cancellation are no-ops.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil

from ..models.files.model_catalog import MODEL_FOLDERS
from ..models.files.packaged_data import EXAMPLE_PHOTO, data_path

log = logging.getLogger(__name__)

MODELS_DIR_ENV = "GENAFFECT_MODELS_DIR"


def _folder_paths():
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths


def register_model_folders() -> None:
    """Add ``models/<folder>`` for each of our folders, after any the user configured.

    ``extra_model_paths.yaml`` is read before custom nodes load, so appending (``is_default=False``)
    keeps the user's own folders first and never removes one.
    """
    folder_paths = _folder_paths()
    if folder_paths is None:
        return
    for name in MODEL_FOLDERS:
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name), is_default=False)


def provide_example_photo() -> None:
    """Put the templates' example photo into ComfyUI's input folder, where their Load Image nodes look (ComfyUI has one
    input folder and no way for a pack to add another). Copied once, never over a file of that name; a read-only
    input folder only costs the templates their photo (logged)."""
    folder_paths = _folder_paths()
    if folder_paths is None:
        return
    target = os.path.join(folder_paths.get_input_directory(), EXAMPLE_PHOTO)
    if os.path.exists(target):
        return
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(data_path(EXAMPLE_PHOTO), target + ".partial")
        os.replace(target + ".partial", target)
    except OSError as error:
        log.warning("GenAffect: could not put the templates' example photo in %s (%s); load a photo of your own.",
                    os.path.dirname(target), error)


def models_dir() -> str:
    folder_paths = _folder_paths()
    if folder_paths is not None:
        return folder_paths.models_dir
    return os.path.abspath(os.environ.get(MODELS_DIR_ENV, "models"))


def model_roots(folder: str) -> list[str]:
    """Every folder registered for ``folder`` (e.g. "insightface"), the default one first."""
    folder_paths = _folder_paths()
    if folder_paths is None:
        return [os.path.join(models_dir(), folder)]
    try:
        return folder_paths.get_folder_paths(folder)
    except KeyError:  # a folder nobody registered (e.g. "vae" is always there; ours are added at import)
        return [os.path.join(folder_paths.models_dir, folder)]


def file_identity(*paths: str | None) -> str:
    """Path, size and modification time of each file (missing ones marked): a loader's IS_CHANGED, so ComfyUI
    loads a replaced or re-downloaded file again instead of serving the old one from its cache."""
    parts = []
    for path in paths:
        try:
            stat = os.stat(path) if path else None
        except OSError:
            stat = None
        parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}" if stat else f"{path}:missing")
    return "|".join(parts)


def list_model_files(folder: str, extensions: tuple[str, ...]) -> list[str]:
    """Files with these endings under every root of ``folder``, as relative names with "/" (sorted)."""
    names = set()
    for root in model_roots(folder):
        for directory, _, files in os.walk(root, followlinks=True):
            for file in files:
                if file.lower().endswith(extensions):
                    names.add(os.path.relpath(os.path.join(directory, file), root).replace(os.sep, "/"))
    return sorted(names)


def model_file_path(folder: str, name: str, extensions: tuple[str, ...]) -> str | None:
    """The full path of a file listed by :func:`list_model_files`, or None.

    Only listed names are accepted, so a name typed into a shared workflow can never reach outside
    the model folders (no "../", no absolute paths).
    """
    if name not in list_model_files(folder, extensions):
        return None
    for root in model_roots(folder):
        path = os.path.join(root, *name.split("/"))
        if os.path.isfile(path):
            return path
    return None


def validation_answer(*checks) -> bool | str:
    """A loader's VALIDATE_INPUTS answer: True, or the message of every check that fails (each raises the pack's
    error with the download address and folder). ComfyUI validates every node before a run, so all missing files
    of a workflow are listed at once instead of one per run."""
    from ..models.errors import GenAffectInputError, ModelFileError

    messages = []
    for check in checks:
        try:
            check()
        except (GenAffectInputError, ModelFileError) as error:
            messages.append(str(error))
    return "\n".join(messages) or True


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _user_folder(kind: str) -> str:
    """ComfyUI's input or output folder; outside ComfyUI ``$GENAFFECT_<KIND>_DIR`` or ``./<kind>``."""
    folder_paths = _folder_paths()
    if folder_paths is not None:
        return os.path.abspath(getattr(folder_paths, f"get_{kind}_directory")())
    return os.path.abspath(os.environ.get(f"GENAFFECT_{kind.upper()}_DIR", kind))


def input_images() -> list[str]:
    """The photos in ComfyUI's input folder (its top level, as Load Image lists them), sorted."""
    root = _user_folder("input")
    if not os.path.isdir(root):
        return []
    return sorted(name for name in os.listdir(root)
                  if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(root, name)))


def input_image_path(name: str) -> str | None:
    """The path of the photo ``name`` in ComfyUI's input folder - a listed name, a name in a subfolder, or a full
    path inside the folder (what API wrappers such as comfyui-api put there after downloading a photo) - or None:
    a name from a graph or an engine never reaches outside the input folder."""
    root = _user_folder("input")
    if not isinstance(name, str) or not name.strip():
        return None
    path = os.path.abspath(os.path.join(root, name.strip()))
    inside = os.path.commonpath([root, path]) == root
    return path if inside and path.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(path) else None


def output_folder(filename_prefix: str) -> tuple[str, str, str]:
    """(folder, file-name start, subfolder) for a Save Image-style ``filename_prefix`` ("genaffect_jobs/sheet"):
    inside ComfyUI's output folder, never outside it."""
    from ..models.errors import GenAffectInputError

    root = _user_folder("output")
    subfolder, name = os.path.split(filename_prefix.strip().replace("\\", "/"))
    folder = os.path.abspath(os.path.join(root, subfolder))
    if os.path.isabs(subfolder) or os.path.commonpath([root, folder]) != root:
        raise GenAffectInputError(f"filename_prefix {filename_prefix!r} leads outside ComfyUI's output folder; give "
                                  "a folder inside it, e.g. genaffect_jobs/sheet.")
    return folder, name, os.path.relpath(folder, root).replace(os.sep, "/").removeprefix(".")


def torch_device():
    """ComfyUI's compute device (its choice of GPU, or CPU with --cpu); CPU outside ComfyUI."""
    model_management = _model_management()
    return "cpu" if model_management is None else model_management.get_torch_device()


class _SilentProgress:
    def update_absolute(self, value, total=None, preview=None):
        pass


def progress_bar(total: int):
    try:
        from comfy.utils import ProgressBar
    except ImportError:
        return _SilentProgress()
    return ProgressBar(total)


def progress_callback(total: int):
    """An ``on_progress(done, total)`` for loops in models/: moves ComfyUI's bar and honours Cancel."""
    bar = progress_bar(total)

    def on_progress(done: int, count: int) -> None:
        bar.update_absolute(done, count)
        check_interrupted()

    return on_progress


@functools.cache
def _model_management():
    # Cached: outside ComfyUI a failing import searches sys.path again on every call, per frame.
    try:
        import comfy.model_management as model_management
    except ImportError:
        return None
    return model_management


def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception when the user pressed Cancel."""
    model_management = _model_management()
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()
