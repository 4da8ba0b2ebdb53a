"""The live editor's photo: the face of a photo in ComfyUI's input folder, read once by the server (MediaPipe's face
landmarker) so the browser can warp the photo as sliders move (js/face_warp.js). Requests are checked and capped
before anything is decoded: a name, not a path; a photo inside ComfyUI's input, output or temp folder; its pixel
count from the file's header."""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np
from PIL import Image

from ..models.errors import GenAffectInputError, ModelFileError, PhotoTooLargeError
from ..models.expression import expression_estimator, face_landmarks
from ..models.images import read_photo
from . import comfy_host

MAX_NAME = 512  # characters of a file name
MAX_PIXELS = 50_000_000  # refused before decoding
READ_SIDE = 1024  # the landmarker reads a copy this large at most: landmarks are normalised, so it is enough
LANDMARKER_FILE = "face_landmarker.task"
_lock = threading.Lock()  # one landmarker, one photo at a time


class PhotoError(GenAffectInputError):
    """A photo request that cannot be served; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def photo_path(payload) -> tuple[str, dict]:
    """The file a request names (``{"image": <a Load Image value, e.g. "face.png", "sub/face.png [input]">}``) and
    how ComfyUI's /view serves it ({filename, subfolder, type})."""
    name = payload.get("image") if isinstance(payload, dict) else None
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or "\0" in name:
        raise PhotoError(f"give the photo as {{\"image\": <a Load Image file name>}} (a name of at most {MAX_NAME} "
                         "characters).")
    import folder_paths

    try:
        path = os.path.abspath(folder_paths.get_annotated_filepath(name.strip()))
    except ValueError as error:  # ComfyUI refuses names that leave its folders ("../", absolute paths)
        raise PhotoError(f"{name!r} is not inside ComfyUI's input, output or temp folder ({error}).", 403) from error
    for kind in ("input", "output", "temp"):
        root = os.path.abspath(folder_paths.get_directory_by_type(kind))
        if os.path.commonpath((path, root)) == root:
            break
    else:
        raise PhotoError(f"{name!r} is not inside ComfyUI's input, output or temp folder.", 403)
    if not os.path.isfile(path):
        raise PhotoError(f"{name!r} is not in ComfyUI's input folder; upload it first (Load Image).", 404)
    subfolder = os.path.relpath(os.path.dirname(path), root).replace(os.sep, "/")
    return path, {"filename": os.path.basename(path), "subfolder": "" if subfolder == "." else subfolder, "type": kind}


def load_photo(path: str) -> np.ndarray:
    """RGB uint8, turned upright by its EXIF orientation (as Load Image and the browser show it)."""
    name = os.path.basename(path)  # the browser is told the file's name, never where the server keeps it
    try:
        return read_photo(path, max_pixels=MAX_PIXELS)
    except PhotoTooLargeError as error:
        raise PhotoError(f"{str(error).replace(path, name)} The live preview reads photos of at most "
                         f"{MAX_PIXELS // 1_000_000} megapixels.", 413) from None
    except GenAffectInputError as error:
        raise PhotoError(str(error).replace(path, name), 422) from None


@lru_cache(maxsize=1)
def _landmarker(path: str, identity: str):
    return expression_estimator.create_face_landmarker(path, max_faces=4)


def landmarker():
    names = comfy_host.list_model_files("mediapipe", (".task",))
    name = LANDMARKER_FILE if LANDMARKER_FILE in names else (names[0] if names else None)
    path = comfy_host.model_file_path("mediapipe", name, (".task",)) if name else None
    if path is None:
        entry = expression_estimator.LANDMARKER_ENTRY
        raise PhotoError(f"the live photo preview needs MediaPipe's face landmarker: download {entry.url} "
                         f"({entry.size_mb} MB) into models/mediapipe/.", 422)
    return _landmarker(path, comfy_host.file_identity(path))


def read_face(payload) -> dict:
    """What the browser warps with: the photo's size, its largest face's 478 landmarks (normalised), its 52
    blendshapes and head pose, and how many faces were seen."""
    path, view = photo_path(payload)
    rgb = load_photo(path)
    height, width = rgb.shape[:2]
    scale = min(1.0, READ_SIDE / max(height, width))
    small = rgb
    if scale < 1.0:
        small = np.asarray(Image.fromarray(rgb).resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                                       Image.BILINEAR))
    try:
        with _lock:
            result = landmarker().detect(expression_estimator.to_mediapipe_image(small))
    except (ModelFileError, GenAffectInputError) as error:
        raise PhotoError(str(error), 422) from error
    faces = face_landmarks.faces_from_result(result)
    if not faces:
        raise PhotoError("no face found in the photo; use one where the face is visible and at least ~64 px wide.",
                         422)
    face = faces[face_landmarks.face_order(faces, "largest")[0]]
    return {"width": width, "height": height, "faces": len(faces), "view": view,
            "landmarks": face["landmarks"].astype(float).ravel().tolist(),
            "reading": face["blendshapes"].astype(float).tolist(),
            "head_pose": face["head_pose"].astype(float).tolist()}
