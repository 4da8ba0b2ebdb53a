"""Every face of an image, numbered, and the ones a node works on: by number, or the face that matches an identity.

The listing holds what the face analyzer sees of each face (box, 5 keypoints, score, ArcFace embedding); the
expression stage adds what the estimator reads on it (``models/expression/face_reading.py``). Faces are numbered
per image in one of the identity nodes' orders (left to right, largest first, highest score), so "face 1" means
the same face in the preview, the report and the choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import GenAffectInputError, NoFaceFoundError
from ..images import rgb_to_bgr
from .face_analyzer import FaceAnalyzer
from .face_choice import NO_FACE_POLICIES, SkippedImage, describe_skipped, skip_or_fail, too_small_reason
from .identity import Identity, ReferenceFace, ordered_faces

ALL = "all"
# ArcFace cosine above which two faces are taken for one person: different people measure up to ~0.26 with the
# small recognizer, photos of one person down to ~0.4 (docs/multiface.md has the measurement).
DEFAULT_MIN_SIMILARITY = 0.35


@dataclass(eq=False)  # holds arrays: compare by identity
class ListedFace:
    """One face of one image, as the analyzer (and, when given, the expression estimator) saw it."""

    image_index: int
    number: int  # its place in the image's face order (0 = first)
    box: np.ndarray  # (4,) x1, y1, x2, y2 in the image's pixels
    keypoints: np.ndarray  # (5, 2) eyes, nose, mouth corners
    score: float
    embedding: np.ndarray  # (512,) L2-normalised ArcFace embedding
    aligned_rgb: np.ndarray  # the aligned crop the recognizer saw, RGB uint8
    similarity: float | None = None  # cosine to the identity the choice matched, when one was given
    # What the expression estimator read on the face (None until read, or where it found no face there)
    blendshapes: np.ndarray | None = None  # (52,)
    head_pose: np.ndarray | None = None  # (3,) yaw, pitch, roll in degrees
    landmarks: np.ndarray | None = None  # (478, 3), x and y normalised to the whole image
    flame: np.ndarray | None = None  # (55,) with SMIRK

    @property
    def name(self) -> str:
        return f"image {self.image_index} face {self.number}"

    @property
    def side(self) -> float:
        """The box's longer side in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass(eq=False)
class FaceListing:
    """The GA_FACES socket: every image's faces in order, and the chosen ones (image by image, in face order)."""

    faces: list[list[ListedFace]]
    chosen: list[ListedFace]
    image_sizes: list[tuple[int, int]]  # (height, width) per image
    order: str
    how_chosen: str
    recognition_model: str = ""
    skipped: list[SkippedImage] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{sum(len(f) for f in self.faces)} face(s) in {len(self.faces)} image(s), numbered {self.order}; "
                 f"chosen: {self.how_chosen}"]
        chosen = {id(face): row for row, face in enumerate(self.chosen)}
        for index, faces in enumerate(self.faces):
            for face in faces:
                x1, y1, x2, y2 = (int(round(v)) for v in face.box)
                parts = [f"  {face.name}: box {x1},{y1}-{x2},{y2}, score {face.score:.2f}"]
                if face.similarity is not None:
                    parts.append(f"cosine to identity {face.similarity:.2f}")
                if face.head_pose is not None:
                    yaw, pitch, roll = face.head_pose
                    parts.append(f"yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f}")
                row = chosen.get(id(face))
                parts.append("not chosen" if row is None else f"CHOSEN as row {row}")
                lines.append(", ".join(parts))
        for skipped in self.skipped:
            lines.append(f"  image {skipped.image_index}: no face chosen ({skipped.reason})")
        return "\n".join(lines)


def list_faces(analyzer: FaceAnalyzer, images_rgb: list[np.ndarray], order: str = "left to right",
               on_progress=None) -> list[list[ListedFace]]:
    """Detect and embed every face of each RGB uint8 image, numbered in ``order``. Images too small to hold a
    face list none."""
    listed: list[list[ListedFace]] = []
    for index, rgb in enumerate(images_rgb):
        faces: list[ListedFace] = []
        if too_small_reason(rgb) is None:
            bgr = rgb_to_bgr(rgb)
            detections, _ = ordered_faces(analyzer, bgr, order)  # with the close-up retries
            if detections:
                aligned = [analyzer.align(bgr, d.keypoints) for d in detections]
                embeddings = analyzer.embed(aligned)
                faces = [ListedFace(index, number, d.box.astype(np.float32), d.keypoints.astype(np.float32), d.score,
                                    embeddings[number], np.ascontiguousarray(aligned[number][..., ::-1]))
                         for number, d in enumerate(detections)]
        listed.append(faces)
        if on_progress is not None:
            on_progress(index + 1, len(images_rgb))
    return listed


def parse_face_numbers(text: str) -> list[int] | None:
    """"all" (None), or face numbers and ranges: "0", "0, 2", "1-3" -> [1, 2, 3]. Refuses anything else."""
    text = text.strip().lower()
    if text in ("", ALL):
        return None
    numbers: list[int] = []
    for part in re.split(r"[,;\s]+", text):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise GenAffectInputError(f"faces: {part!r} is not a face number; write 'all', numbers such as '0, 2' or "
                                      "a range such as '1-3' (numbers as the preview shows them, from 0).")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise GenAffectInputError(f"faces: the range {part!r} runs backwards; write it as {last}-{first}.")
        numbers += [n for n in range(first, last + 1) if n not in numbers]
    return numbers


def choose_faces(faces: list[list[ListedFace]], image_sizes: list[tuple[int, int]], *, order: str, which: str = ALL,
                 identity: Identity | None = None, min_similarity: float = DEFAULT_MIN_SIMILARITY,
                 on_no_face: str = "skip", recognition_model: str = "") -> FaceListing:
    """The faces a node works on. Without an identity: the faces numbered in ``which`` ("all", "0, 2", "1-3") of
    each image. With one: in each image, the one of those faces most like it, if its cosine reaches
    ``min_similarity``. An image with no such face is skipped or stops the node (``on_no_face``); no chosen face
    in any image is an error."""
    if on_no_face not in NO_FACE_POLICIES:
        raise GenAffectInputError(f"on_no_face must be one of {NO_FACE_POLICIES}, got {on_no_face!r}.")
    numbers = parse_face_numbers(which)
    if identity is not None:
        _check_same_recognizer(recognition_model, identity)
    chosen, skipped = [], []
    for index, image_faces in enumerate(faces):
        candidates = image_faces if numbers is None else [f for f in image_faces if f.number in numbers]
        if identity is not None:
            for face in image_faces:
                face.similarity = float(face.embedding @ identity.embedding)
            matching = [f for f in candidates if f.similarity >= min_similarity]
            candidates = sorted(matching, key=lambda f: -f.similarity)[:1]
        if candidates:
            chosen += candidates
            continue
        skip_or_fail(index, _why_none(image_faces, numbers, identity, min_similarity), on_no_face, skipped)
    if not chosen:
        raise NoFaceFoundError(f"No face chosen in any of the {len(faces)} image(s) ({describe_skipped(skipped)}).")
    how = (f"the face most like the identity (cosine >= {min_similarity:.2f})" if identity is not None else
           "every face" if numbers is None else "faces " + ", ".join(map(str, numbers)))
    if identity is not None and numbers is not None:
        how += " among faces " + ", ".join(map(str, numbers))
    return FaceListing(faces, chosen, image_sizes, order, how, recognition_model, skipped)


def _why_none(faces: list[ListedFace], numbers: list[int] | None, identity: Identity | None, limit: float) -> str:
    if not faces:
        return "no face detected"
    if numbers is not None and not any(f.number in numbers for f in faces):
        return f"faces {', '.join(map(str, numbers))} asked for, but it has {len(faces)} (numbered from 0)"
    best = max(faces, key=lambda f: f.similarity)
    return (f"no face is like the identity: the nearest, face {best.number}, has cosine {best.similarity:.2f} < "
            f"{limit:.2f}")


def _check_same_recognizer(recognition_model: str, identity: Identity) -> None:
    ours, theirs = (name.replace("\\", "/").rsplit("/", 1)[-1]
                    for name in (recognition_model, identity.recognition_model))
    if ours and theirs and ours != theirs:
        raise GenAffectInputError(f"the identity was embedded with {theirs} but these faces with {ours}; cosines "
                                  "between different recognizers mean nothing. Use the same Face Analyzer Loader "
                                  "settings for both.")


def people_identity(faces: list[ListedFace], person_of_image: list[int], recognition_model: str) -> Identity:
    """A GA_IDENTITY of several people: ``faces`` (one per person) and the person each image of a set shows."""
    references = [ReferenceFace(image_index=f.image_index, box=f.box, keypoints=f.keypoints, det_score=f.score,
                                embedding=f.embedding, crop_rgb=f.aligned_rgb, detection_index=f.number,
                                cosine_to_identity=1.0) for f in faces]
    embeddings = np.stack([f.embedding for f in faces]).astype(np.float32)
    return Identity(references=references, embedding=embeddings[0], recognition_model=recognition_model,
                    person_embeddings=embeddings, person_of_image=list(person_of_image))
