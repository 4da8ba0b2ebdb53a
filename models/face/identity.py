"""From reference photos to one identity: detect, choose a face, align, embed, aggregate, check.

The identity is the re-normalised mean of the references' L2-normalised ArcFace embeddings (what
Arc2Face and PuLID-style pipelines average). Each reference's cosine to that mean is reported, and a
reference that does not look like the others (a different person slipped in) is flagged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import GenAffectInputError, NoFaceFoundError
from ..images import bgr_to_rgb, rgb_to_bgr
from .face_analyzer import Detection, FaceAnalyzer
from .face_choice import FACE_ORDERS, RetriedImage, SkippedImage, describe_skipped, faces_per_image

log = logging.getLogger(__name__)

# Leave-one-out cosine below which a reference is flagged as another person. ArcFace verification
# thresholds sit around 0.3 for single pairs; a mean of the others is cleaner than a single pair.
DEFAULT_OUTLIER_THRESHOLD = 0.3


@dataclass(eq=False)  # holds arrays: compare by identity
class ReferenceFace:
    """The face kept from one reference image."""

    image_index: int
    box: np.ndarray  # (4,) x1, y1, x2, y2 in that image's pixels
    keypoints: np.ndarray  # (5, 2)
    det_score: float
    embedding: np.ndarray  # (512,) L2-normalised
    crop_rgb: np.ndarray  # aligned crop the recognizer saw, RGB uint8 (112 x 112 for ArcFace)
    faces_in_image: int = 1
    detection_index: int = 0  # which of the image's detections, as extract_identity returns them, was kept
    cosine_to_identity: float = float("nan")
    outlier: bool = False


@dataclass(eq=False)
class Identity:
    """The GA_IDENTITY socket: what was found in each reference and the aggregated embedding."""

    references: list[ReferenceFace]
    embedding: np.ndarray  # (512,) L2-normalised mean of the kept references
    skipped: list[SkippedImage] = field(default_factory=list)
    recognition_model: str = ""
    note: str = ""  # what the set of references says as a whole (two that disagree)
    retried: list[RetriedImage] = field(default_factory=list)  # references whose face a detection retry found
    # Per-face edits of several people: image i of a set shows person ``person_of_image[i]``, whose embedding is
    # that row of ``person_embeddings`` (one per reference); a set sampled in rounds repeats the images' order.
    # None: every image shows the one person of ``embedding``.
    person_embeddings: np.ndarray | None = None
    person_of_image: list[int] | None = None

    @property
    def several_people(self) -> bool:
        return self.person_of_image is not None

    def one_person(self, node: str) -> np.ndarray:
        """The embedding, for a node that conditions on one person; an identity of several people is refused."""
        if self.several_people:
            raise GenAffectInputError(f"{node} needs one person's identity, but this one holds the {len(self.references)} "
                                      "people of Crop Faces (one per crop); use Extract Identity on that person's "
                                      "photos, or a node that takes one identity per image.")
        return self.embedding

    def embeddings_for(self, count: int) -> np.ndarray:
        """(count, D): the identity each of ``count`` images should show (rounds of a several-people set repeat
        its order)."""
        if not self.several_people:
            return np.repeat(self.embedding[None], count, axis=0)
        images = len(self.person_of_image)
        if count % images:
            raise GenAffectInputError(f"{count} images for an identity of {images} crops: give the crops' images in "
                                      "their order (or whole rounds of them).")
        return self.person_embeddings[[self.person_of_image[i % images] for i in range(count)]]

    def for_rows(self, rows: list[int]) -> "Identity":
        """The identity of some images of the set (a guarded round re-samples only some)."""
        if not self.several_people:
            return self
        images = len(self.person_of_image)
        return replace(self, person_of_image=[self.person_of_image[r % images] for r in rows])

    @property
    def outliers(self) -> list[int]:
        return [r.image_index for r in self.references if r.outlier]

    def report(self) -> str:
        if self.several_people:
            return (f"identity of {len(self.references)} people, one per face, for {len(self.person_of_image)} "
                    f"image(s) (image i shows person {self.person_of_image}[i]), recognition model "
                    f"{self.recognition_model}")
        lines = [f"identity from {len(self.references)} reference(s), recognition model {self.recognition_model}",
                 "  (cosine to identity: ArcFace cosine of the photo's face to the mean of the references, itself "
                 "included, so it reads high; photos of one person differ far more from each other, and a reference "
                 "is flagged only when it is unlike the others)"]
        for ref in self.references:
            flag = "  <- looks like a different person" if ref.outlier else ""
            lines.append(
                f"  image {ref.image_index}: cosine to identity {ref.cosine_to_identity:.3f}, detection score "
                f"{ref.det_score:.2f}, {ref.faces_in_image} face(s) in image{flag}"
            )
        for skip in self.skipped:
            lines.append(f"  image {skip.image_index}: skipped ({skip.reason})")
        for retry in self.retried:
            lines.append(f"  image {retry.image_index}: face {retry.how}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def order_faces(detections: list[Detection], order: str) -> list[Detection]:
    """Faces sorted so that index 0 is the first choice under ``order``."""
    if order == "largest":
        return sorted(detections, key=lambda d: -d.area)
    if order == "highest score":
        return sorted(detections, key=lambda d: -d.score)
    if order == "left to right":
        return sorted(detections, key=lambda d: (d.box[0] + d.box[2]) / 2)
    raise GenAffectInputError(f"face order must be one of {FACE_ORDERS}, got {order!r}.")


def ordered_faces(analyzer: FaceAnalyzer, image_bgr: np.ndarray, order: str) -> tuple[list[Detection], str]:
    """The analyzer's faces of one photo (with its detection retries) in ``order``, and how they were found."""
    faces, how = analyzer.find_faces(image_bgr)
    return order_faces(faces, order), how


def mean_identity(embeddings: np.ndarray) -> np.ndarray:
    """Re-normalised mean of L2-normalised embeddings ``(N, D)`` -> ``(D,)``."""
    mean = embeddings.mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm < 1e-6:
        raise GenAffectInputError("the reference embeddings cancel out; the references show unrelated faces.")
    return (mean / norm).astype(np.float32)


def leave_one_out_cosines(embeddings: np.ndarray) -> np.ndarray:
    """Cosine of each embedding to the normalised mean of all the others (NaN with one reference)."""
    count = embeddings.shape[0]
    if count < 2:
        return np.full(count, np.nan, dtype=np.float32)
    total = embeddings.sum(axis=0)
    others = total[None, :] - embeddings
    others /= np.linalg.norm(others, axis=1, keepdims=True).clip(min=1e-12)
    return np.einsum("nd,nd->n", embeddings, others).astype(np.float32)


def extract_identity(
    analyzer: FaceAnalyzer,
    images_rgb: list[np.ndarray],
    *,
    face_order: str = "largest",
    face_index: int = 0,
    on_no_face: str = "skip",
    outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD,
    drop_outliers: bool = False,
    on_progress=None,
) -> tuple[Identity, list[list[Detection]]]:
    """Build an :class:`Identity` from RGB uint8 reference images.

    Returns the identity and every image's detections (for previews). A reference without a usable
    face is skipped with a warning (``on_no_face="skip"``) or is an error (``"error"``); no face in
    any reference is always an error. ``on_progress(i, n)`` is called after each image.
    """
    kept: list[tuple[int, Detection, np.ndarray, int]] = []
    skipped: list[SkippedImage] = []
    retried: list[RetriedImage] = []
    all_detections: list[list[Detection]] = []
    current = {}  # the photo being read, converted to BGR once for the detector and the alignment

    def detect(_, rgb):
        current["bgr"] = rgb_to_bgr(rgb)
        return ordered_faces(analyzer, current["bgr"], face_order)

    for index, detections, usable in faces_per_image(images_rgb, detect, face_index=face_index, face_order=face_order,
                                                     on_no_face=on_no_face, skipped=skipped, what="Reference image",
                                                     on_progress=on_progress, retried=retried):
        all_detections.append(detections)
        if usable:
            chosen = detections[face_index]
            if len(detections) > 1:
                log.info("GenAffect: image %d has %d faces; using face %d by '%s'.", index, len(detections), face_index, face_order)
            kept.append((index, chosen, analyzer.align(current["bgr"], chosen.keypoints), len(detections)))
    if not kept:
        details = describe_skipped(skipped)
        raise NoFaceFoundError(
            f"No face found in any of the {len(images_rgb)} reference image(s) ({details}). Use photos where the "
            "face is visible and at least ~64 px wide, or lower the detection threshold / raise the detection size "
            "of the face analyzer."
        )

    embeddings = analyzer.embed([crop for _, _, crop, _ in kept])
    references = [
        ReferenceFace(
            image_index=index,
            box=det.box,
            keypoints=det.keypoints,
            det_score=det.score,
            embedding=embeddings[i],
            crop_rgb=bgr_to_rgb(crop),
            faces_in_image=faces,
            detection_index=face_index,  # the detections are returned in the order face_index picked from
        )
        for i, (index, det, crop, faces) in enumerate(kept)
    ]
    note = _flag_outliers(references, embeddings, outlier_threshold)
    dropped = [r for r in references if drop_outliers and r.outlier]
    if len(dropped) == len(references):  # everyone disagrees (e.g. two people): keep them all
        dropped = []
    used = [r for r in references if r not in dropped]
    identity_embedding = mean_identity(np.stack([r.embedding for r in used]))
    for ref in references:
        ref.cosine_to_identity = float(ref.embedding @ identity_embedding)
    skipped += [SkippedImage(r.image_index, "dropped as an outlier") for r in dropped]
    identity = Identity(
        references=used,
        embedding=identity_embedding,
        skipped=skipped,
        recognition_model=analyzer.files.get("recognition", ""),
        note=note,
        retried=retried,
    )
    return identity, all_detections


def _flag_outliers(references: list[ReferenceFace], embeddings: np.ndarray, threshold: float) -> str:
    """Flag references unlike the others; returns a note for the report where the set as a whole disagrees."""
    if len(references) < 2:
        return ""
    cosines = leave_one_out_cosines(embeddings)
    if len(references) == 2:  # with two, neither can be singled out: the pair is reported, no photo flagged
        if cosines[0] < threshold:
            log.warning(
                "GenAffect: the two references look like different people (cosine %.3f < %.2f); check the photos.",
                float(cosines[0]), threshold,
            )
            return (f"the two references look like different people (their cosine {float(cosines[0]):.3f} < "
                    f"{threshold:.2f}); neither can be singled out: check the photos")
        return ""
    for ref, cosine in zip(references, cosines):
        if cosine < threshold:
            ref.outlier = True
            log.warning(
                    "GenAffect: reference image %d looks like a different person than the others (cosine %.3f < %.2f).",
                    ref.image_index, float(cosine), threshold,
                )
