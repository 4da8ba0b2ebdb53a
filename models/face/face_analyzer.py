"""Loading insightface's detector and recognizer through its own router, with an explicit provider list.

We load single ``.onnx`` files with ``insightface.model_zoo.get_model`` (the router users' code runs)
rather than ``FaceAnalysis``: it lets Arc2Face's ``arcface.onnx`` replace the pack's recognizer,
skips the landmark/attribute models we never call, and embeds only the face we keep. Loaded models
are cached at module level by (file, providers) and can be released.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import GenAffectInputError, ModelFileError
from ..files.insightface_packs import onnx_files
from ..files.onnx_providers import ProviderChoice, check_session_providers

log = logging.getLogger(__name__)

ARC2FACE_RECOGNIZER = "arcface.onnx"
ARC2FACE_RECOGNIZER_URL = "https://huggingface.co/FoivosPar/Arc2Face/blob/main/arcface.onnx"
EMBEDDING_SIZE = 512
MIN_RETRY_SIZE = 128  # the smallest detection size a retry uses (SCRFD takes multiples of 32)

_cache_lock = threading.Lock()
_model_cache: dict[tuple[tuple[str, int, int], tuple[str, ...]], object] = {}
# Which task the router gives each file, so routing a pack twice creates no session for unused models.
_task_cache: dict[tuple[str, int, int], str | None] = {}


def _file_key(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


def _route(path: str, providers: tuple[str, ...]):
    """Create an insightface model for ``path`` through its router; unreadable files get a clear error."""
    import onnxruntime
    from insightface.model_zoo import get_model

    onnxruntime.set_default_logger_severity(3)
    try:
        return get_model(path, providers=list(providers))
    except Exception as error:  # onnxruntime raises several unrelated types for a bad file
        size = os.path.getsize(path)
        raise ModelFileError(
            f"{path} ({size:,} bytes) is not a readable ONNX model ({type(error).__name__}: {error}). "
            "It is probably an incomplete download or an HTML/LFS page saved under that name; "
            "download it again."
        ) from error


def load_model(path: str, providers: tuple[str, ...], routed=None):
    """The insightface model for ``path`` with ``providers``, from the cache when already loaded. The cache
    keys on the file's identity (path, size, modification time), so a replaced file is loaded afresh and
    its old session dropped."""
    identity = _file_key(path)
    key = (identity, tuple(providers))
    with _cache_lock:
        model = _model_cache.get(key)
        if model is None:
            for stale in [k for k in _model_cache if k[0][0] == identity[0] and k[0] != identity]:
                del _model_cache[stale]
            model = routed if routed is not None else _route(path, providers)
            _task_cache[identity] = getattr(model, "taskname", None)
            _model_cache[key] = model
        return model


def route_pack(pack_dir: str, providers: tuple[str, ...]) -> tuple[dict[str, str | None], dict[str, object]]:
    """The router's task for every ``.onnx`` in the pack, and the models routed just now.

    Tasks are remembered per file, so a second load creates no session for the landmark and
    attribute models a pack also holds; the fresh models are handed to :func:`load_model` for reuse.
    """
    tasks, fresh = {}, {}
    for path in onnx_files(pack_dir):
        key = _file_key(path)
        if key not in _task_cache:
            model = _route(path, providers)
            _task_cache[key] = getattr(model, "taskname", None)
            fresh[path] = model
        tasks[path] = _task_cache[key]
    return tasks, fresh


def release_models() -> int:
    """Drop every cached session (frees RAM/VRAM); returns how many were released."""
    with _cache_lock:
        count = len(_model_cache)
        _model_cache.clear()
    return count


def cached_model_count() -> int:
    return len(_model_cache)


def find_arc2face_recognizer(pack_dir: str, arc2face_roots: list[str]) -> str | None:
    """Arc2Face's ``arcface.onnx``: in an ``arc2face`` model folder, or inside the pack as Arc2Face's README puts it."""
    for folder in [*arc2face_roots, pack_dir]:
        candidate = os.path.join(folder, ARC2FACE_RECOGNIZER)
        if os.path.isfile(candidate):
            return candidate
    return None


@dataclass(eq=False)  # holds arrays: compare by identity
class Detection:
    """One face found by the detector, in the image's pixel coordinates."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    keypoints: np.ndarray  # (5, 2) eyes, nose, mouth corners (subject's right eye first)
    score: float

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


@dataclass(eq=False)
class FaceAnalyzer:
    """A detector + recognizer pair and the settings to run them (the GA_FACE_ANALYZER socket)."""

    pack: str
    detector: object  # insightface SCRFD
    recognizer: object  # insightface ArcFaceONNX
    provider_choice: ProviderChoice
    det_size: int = 640
    det_threshold: float = 0.5
    files: dict[str, str] = field(default_factory=dict)

    @property
    def crop_size(self) -> int:
        return int(self.recognizer.input_size[0])

    def providers_in_use(self) -> dict[str, list[str]]:
        return {
            "detection": list(self.detector.session.get_providers()),
            "recognition": list(self.recognizer.session.get_providers()),
        }

    def describe(self) -> str:
        lines = [f"pack: {self.pack}", f"detection size: {self.det_size}, threshold: {self.det_threshold}"]
        for task, providers in self.providers_in_use().items():
            lines.append(f"{task}: {os.path.basename(self.files[task])} on {', '.join(providers)}")
        return "\n".join(lines)

    def detect(self, image_bgr: np.ndarray, size: int | None = None) -> list[Detection]:
        """One detector pass at the analyzer's size (or ``size``)."""
        size = size or self.det_size
        # Size and threshold go with every call: the detector object is shared through the cache.
        boxes, keypoints = self.detector.detect(image_bgr, input_size=(size, size), det_thresh=self.det_threshold)
        return [Detection(box=boxes[i, :4].copy(), keypoints=keypoints[i].copy(), score=float(boxes[i, 4])) for i in range(boxes.shape[0])]

    def retry_attempts(self) -> list[tuple[float, int]]:
        """(border, size) of each retry after a first pass found nothing: a face that fills the frame is larger
        than the detector's biggest anchors once the photo is scaled up to the detection size (SCRFD at 640
        misses most 256x256 close-ups), so the retries make it smaller: an edge-replicated border of a quarter
        of the longer side, then half the detection size, then both, then a border of half the side."""
        smaller = max(MIN_RETRY_SIZE, self.det_size // 2 // 32 * 32)
        return [(0.25, self.det_size), (0.0, smaller), (0.25, smaller), (0.5, smaller)]

    def find_faces(self, image_bgr: np.ndarray) -> tuple[list[Detection], str]:
        """The faces of ``image_bgr`` and how they were found: ``""`` by the first pass, else the retry that
        found them, in words. Faces found with a border are given in the photo's own pixels, and only faces
        whose centre lies inside the photo count."""
        found = self.detect(image_bgr)
        if found:
            return found, ""
        height, width = image_bgr.shape[:2]
        for border, size in self.retry_attempts():
            pad = int(round(border * max(height, width)))
            padded = np.pad(image_bgr, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else image_bgr
            shift = np.array([pad, pad], dtype=np.float32)
            found = []
            for face in self.detect(padded, size):
                box, keypoints = face.box - np.tile(shift, 2), face.keypoints - shift
                if 0 <= (box[0] + box[2]) / 2 < width and 0 <= (box[1] + box[3]) / 2 < height:
                    found.append(Detection(box=box, keypoints=keypoints, score=face.score))
            if found:
                how = (f"with a {border:.0%} border" if pad else "") + (" and" if pad and size != self.det_size else "")
                how += f" at detection size {size}" if size != self.det_size else ""
                return found, f"found on retry ({how.strip()}): the face fills the frame"
        return [], ""

    def align(self, image_bgr: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """The crop the recognizer sees: insightface's ArcFace similarity alignment."""
        from insightface.utils import face_align

        return face_align.norm_crop(image_bgr, landmark=keypoints, image_size=self.crop_size)

    def embed(self, crops_bgr: list[np.ndarray]) -> np.ndarray:
        """L2-normalised embeddings ``(N, 512)`` of aligned BGR crops."""
        features = np.asarray(self.recognizer.get_feat(crops_bgr), dtype=np.float32).reshape(len(crops_bgr), -1)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        if not np.all(np.isfinite(features)) or np.any(norms == 0):
            raise GenAffectInputError(
                f"the recognition model {os.path.basename(self.files['recognition'])} returned an invalid "
                "embedding (zero or NaN); the file may be damaged, download it again."
            )
        return features / norms


def load_face_analyzer(
    pack: str,
    pack_dir: str,
    provider_choice: ProviderChoice,
    *,
    use_arc2face_recognizer: bool = False,
    arc2face_roots: list[str] | None = None,
    det_size: int = 640,
    det_threshold: float = 0.5,
) -> FaceAnalyzer:
    """Route the pack's files, pick the detector and the recognizer, load both (cached)."""
    providers = provider_choice.providers
    if not os.path.isdir(pack_dir):  # the commands take the folder as typed; ComfyUI only offers folders it found
        raise ModelFileError(f"Face analyzer: the pack folder {pack_dir} does not exist; give the folder that holds "
                             f"the {pack} pack's .onnx files (e.g. ComfyUI/models/insightface/models/{pack}).")
    tasks, fresh = route_pack(pack_dir, providers)
    files = list(tasks)
    detectors = [p for p, t in tasks.items() if t == "detection"]
    if not detectors:
        raise ModelFileError(
            f"Face analyzer: the pack folder {pack_dir} has no face detection model (found: "
            f"{[os.path.basename(p) for p in files]}). A pack needs an SCRFD detector such as "
            "scrfd_10g_bnkps.onnx (antelopev2) or det_10g.onnx (buffalo_l); download the whole pack again."
        )
    recognition_path = _choose_recognizer(pack_dir, tasks, use_arc2face_recognizer, arc2face_roots or [])

    detector = load_model(detectors[0], providers, fresh.get(detectors[0]))
    if not getattr(detector, "use_kps", False):
        raise ModelFileError(
            f"Face analyzer: {detectors[0]} detects boxes without the 5 facial keypoints that alignment needs; "
            "use a keypoint detector (scrfd_*_bnkps / det_10g)."
        )
    recognizer = load_model(recognition_path, providers, fresh.get(recognition_path))
    if getattr(recognizer, "taskname", None) != "recognition":
        raise ModelFileError(f"Face analyzer: {recognition_path} is not a face recognition model.")
    size = recognizer.output_shape[-1] if recognizer.output_shape else None
    if isinstance(size, int) and size != EMBEDDING_SIZE:
        raise ModelFileError(
            f"Face analyzer: {recognition_path} gives {size}-d embeddings; GenAffect needs a 512-d ArcFace model "
            "(glintr100.onnx, w600k_r50.onnx or Arc2Face's arcface.onnx)."
        )
    analyzer = FaceAnalyzer(
        pack=pack,
        detector=detector,
        recognizer=recognizer,
        provider_choice=provider_choice,
        det_size=int(det_size),
        det_threshold=float(det_threshold),
        files={"detection": detectors[0], "recognition": recognition_path},
    )
    for task, in_use in analyzer.providers_in_use().items():
        check_session_providers(provider_choice, os.path.basename(analyzer.files[task]), in_use)
    return analyzer


def require_arc2face_recognizer(pack_dir: str, arc2face_roots: list[str]) -> str:
    """Arc2Face's arcface.onnx (:func:`find_arc2face_recognizer`), or :class:`ModelFileError` with where to get it."""
    found = find_arc2face_recognizer(pack_dir, arc2face_roots)
    if found is None:
        target = arc2face_roots[0] if arc2face_roots else "ComfyUI/models/arc2face"
        raise ModelFileError(
            f"Face analyzer: Arc2Face's {ARC2FACE_RECOGNIZER} was not found. Download it from "
            f"{ARC2FACE_RECOGNIZER_URL} (261 MB) into {target}."
        )
    return found


def _choose_recognizer(pack_dir: str, tasks: dict[str, str | None], use_arc2face: bool, arc2face_roots: list[str]) -> str:
    if use_arc2face:
        return require_arc2face_recognizer(pack_dir, arc2face_roots)
    recognizers = [p for p, t in tasks.items() if t == "recognition"]
    # Arc2Face's README drops arcface.onnx into the pack; "pack default" still means the pack's own model.
    own = [p for p in recognizers if os.path.basename(p) != ARC2FACE_RECOGNIZER]
    if own or recognizers:
        return (own or recognizers)[0]
    raise ModelFileError(
        f"Face analyzer: the pack folder {pack_dir} has no face recognition model (found: "
        f"{[os.path.basename(p) for p in tasks]}). antelopev2 ships glintr100.onnx, buffalo_l w600k_r50.onnx; "
        f"or choose recognition 'arcface.onnx (Arc2Face)' after downloading it from {ARC2FACE_RECOGNIZER_URL}."
    )
