"""Training data for the Gen-AFFECT adapter: a folder of photos and videos -> shards the trainer reads.

Layout read: ``<root>/<person>/<files>`` (one folder per person; files directly in ``<root>`` are each
their own person). Images and video frames go through the pack's own code: insightface finds the
largest face and its ArcFace identity (``extract_identity``, as GenAffect Extract Identity), the face
is aligned FFHQ-style (as GenAffect Align Face) and its expression estimated on that aligned crop
(MediaPipe blendshapes, SMIRK FLAME-55 when loaded, as GenAffect Estimate Expression). A caption is
read from ``<file>.txt`` beside the file, else the default caption.

Written: ``shard-00000.safetensors``, ... each holding the VAE latents of its faces, identities,
expressions, person numbers and its captions' text embeddings; and ``dataset.json`` (persons, counts,
what was skipped). :class:`ShardDataset` reads them and makes the cross-pairs: the identity from one
image of a person, the target image and its expression from another.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..models.errors import GenAffectInputError, NoFaceFoundError
from ..models.expression.expression_estimator import estimate_expressions
from ..models.face.face_align import align_ffhq
from ..models.face.identity import extract_identity
from ..models.files.weight_files import write_safetensors
from ..models.generation.dit_adapter import expression_input
from ..models.images import read_photo

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
SHARD_FORMAT = "genaffect.training_shard"
DEFAULT_CAPTION = "a photo of a person's face"
CHUNK = 32  # frames analysed (and VAE-encoded) together


@dataclass
class Source:
    person: str
    path: str
    caption: str


def find_sources(root: str, default_caption: str = DEFAULT_CAPTION, skipped: list[str] | None = None) -> list[Source]:
    """Every image and video under ``root``, with its person (first sub-folder) and caption, sorted. A file whose
    caption cannot be read as UTF-8 text is left out and said in ``skipped``."""
    if not os.path.isdir(root):
        raise GenAffectInputError(f"{root} is not a folder; give the folder holding one sub-folder per person.")
    sources = []
    for directory, folders, files in os.walk(root):
        folders.sort()
        for name in sorted(files):
            stem, extension = os.path.splitext(name)
            if extension.lower() not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
                continue
            relative = os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")
            person = relative.split("/")[0] if "/" in relative else stem
            caption_file = os.path.join(directory, stem + ".txt")
            caption = default_caption
            if os.path.isfile(caption_file):
                try:
                    with open(caption_file, encoding="utf-8") as handle:
                        caption = handle.read().strip() or default_caption
                except (OSError, UnicodeDecodeError) as error:
                    if skipped is not None:
                        skipped.append(f"{os.path.join(directory, name)}: its caption {caption_file} is not readable "
                                       f"UTF-8 text ({type(error).__name__}); save it as UTF-8")
                    continue
            sources.append(Source(person, os.path.join(directory, name), caption))
    if not sources:
        raise GenAffectInputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) or videos "
                                  f"({', '.join(VIDEO_EXTENSIONS)}) under {root}.")
    return sources


def read_frames(path: str, frame_step: int = 10, max_frames: int = 200):
    """(frame number, RGB uint8) of an image (one frame) or of every ``frame_step``-th video frame."""
    if path.lower().endswith(IMAGE_EXTENSIONS):
        yield 0, read_photo(path)  # an unreadable file raises GenAffectInputError naming it
        return
    import cv2

    video = cv2.VideoCapture(path)
    if not video.isOpened():
        log.warning("GenAffect: %s cannot be opened as a video; skipped.", path)
        return
    try:
        number = kept = 0
        while kept < max_frames:
            ok, frame = video.read()
            if not ok:
                break
            if number % frame_step == 0:
                yield number, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                kept += 1
            number += 1
    finally:
        video.release()


def frames_or_report(path: str, frame_step: int, max_frames: int, skipped: list[str]):
    """:func:`read_frames`, with a file that cannot be read (a damaged or truncated photo, a decompression bomb)
    said in ``skipped`` and the build going on with the next file."""
    try:
        yield from read_frames(path, frame_step, max_frames)
    except GenAffectInputError as error:
        log.warning("GenAffect: skipped %s", error)
        skipped.append(str(error))


@dataclass
class Face:
    """One training example before encoding: the aligned face and what conditions it."""

    person: str
    origin: str  # file (and frame) it came from
    caption: str
    image: np.ndarray  # aligned RGB uint8, size x size
    identity: np.ndarray  # (512,) L2-normalised ArcFace embedding of this image's face
    blendshapes: np.ndarray | None
    flame: np.ndarray | None
    head_pose: np.ndarray | None = None  # (3,) yaw, pitch, roll in degrees, as the estimator reads the aligned face
    judge_class: str | None = None  # the expression judge's class of a generated face (sheet jobs' reports)
    asked: str | None = None  # the expression a generated face was asked for (None: a photo)


@dataclass
class Extraction:
    faces: list[Face] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def extract_faces(frames: list[tuple[Source, str, np.ndarray]], analyzer, estimator, size: int) -> Extraction:
    """Faces of a chunk of (source, origin, RGB frame): identity, aligned crop, expression; the rest skipped."""
    found = Extraction()
    try:
        identity, _ = extract_identity(analyzer, [rgb for _, _, rgb in frames], on_no_face="skip")
    except NoFaceFoundError:
        found.skipped += [f"{origin}: no face" for _, origin, _ in frames]
        return found
    found.skipped += [f"{frames[s.image_index][1]}: {s.reason}" for s in identity.skipped]
    references = identity.references
    aligned = [align_ffhq(frames[r.image_index][2], r.keypoints, size) for r in references]
    try:
        estimation = estimate_expressions(estimator, aligned, on_no_face="skip")
    except NoFaceFoundError:
        found.skipped += [f"{frames[r.image_index][1]}: no expression" for r in references]
        return found
    expression = estimation.expression
    for row, index in enumerate(estimation.image_indices):
        reference = references[index]
        source, origin, _ = frames[reference.image_index]
        found.faces.append(Face(
            person=source.person, origin=origin, caption=source.caption, image=aligned[index],
            identity=reference.embedding.astype(np.float32),
            blendshapes=None if expression.blendshapes is None else expression.blendshapes[row].astype(np.float32),
            flame=None if expression.flame is None else expression.flame[row].astype(np.float32),
            head_pose=None if expression.head_pose is None else expression.head_pose[row].astype(np.float32)))
    found.skipped += [f"{frames[references[s.image_index].image_index][1]}: {s.reason} (expression)"
                      for s in estimation.skipped]
    return found


def write_shard(path: str, faces: list[Face], latents: torch.Tensor, persons: list[str],
                encode_text, family: str | None = None) -> str:
    """One shard: latents (n, C, h, w), identities, expressions, person numbers, its captions' embeddings
    (and their pooled embeddings and padding mask where the backbone has them); ``family`` names the
    backbone whose VAE and text encoders made them. Head poses are kept when every face has one; the judge's
    classes (``judge_class``: a number into the metadata's ``judge_classes``, -1 for none) and the asked-for
    expressions (metadata ``asked``) when a face has one."""
    captions = sorted({face.caption for face in faces})
    text = encode_text(captions)
    state = {
        "latents": latents.float().contiguous(),
        "identity": torch.from_numpy(np.stack([face.identity for face in faces])),
        "person": torch.tensor([persons.index(face.person) for face in faces], dtype=torch.int64),
        "caption": torch.tensor([captions.index(face.caption) for face in faces], dtype=torch.int64),
        **{key: value.contiguous() if key == "prompt_mask" else value.float().contiguous()
           for key, value in text.items()},
    }
    for name in ("blendshapes", "flame", "head_pose"):
        values = [getattr(face, name) for face in faces]
        if all(v is not None for v in values):
            state[name] = torch.from_numpy(np.stack(values))
    metadata = {"format": SHARD_FORMAT, "origins": json.dumps([face.origin for face in faces]),
                "captions": json.dumps(captions)}
    classes = sorted({face.judge_class for face in faces if face.judge_class is not None})
    if classes:
        state["judge_class"] = torch.tensor([classes.index(f.judge_class) if f.judge_class is not None else -1
                                             for f in faces], dtype=torch.int64)
        metadata["judge_classes"] = json.dumps(classes)
    if any(face.asked is not None for face in faces):
        metadata["asked"] = json.dumps([face.asked for face in faces])
    if family is not None:
        metadata["family"] = family
    return write_safetensors(state, path, metadata)


def _data_set_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if (n.startswith("shard-") and n.endswith(".safetensors")) or n == "dataset.json")


def to_pixels(images: list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 images -> (B, 3, H, W) in [-1, 1], what diffusers VAEs encode."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def add_shard_arguments(parser) -> None:
    """The command-line options of every command that writes shards (build_dataset.py, forge_dataset.py): where
    they go, the checkpoint whose VAE and text encoders encode them, the face readers, the face size."""
    parser.add_argument("--model", required=True, help="diffusers folder of the checkpoint you will train on "
                        "(FLUX.1 / Kontext, FLUX.2, Qwen-Image / Edit, SD3)")
    parser.add_argument("--output", required=True, help="folder for the shards")
    parser.add_argument("--insightface", required=True, help="the antelopev2 folder (with its .onnx files)")
    parser.add_argument("--landmarker", required=True, help="MediaPipe's face_landmarker.task")
    parser.add_argument("--smirk", help="SMIRK_em1.pt: also store FLAME-55 expressions")
    parser.add_argument("--size", type=int, default=512, help="side of the aligned face images (default 512)")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--overwrite", action="store_true", help="replace a data set already in --output")


def shard_readers(insightface: str, landmarker: str, smirk: str | None, model: str, device: str) -> dict:
    """What the dataset builder and the forge read faces and write shards with, loaded as the nodes load them: the
    face analyzer (antelopev2's files, detection at 640), the expression estimator, and the checkpoint's family with
    its own VAE and text encoders: {analyzer, estimator, family, encode_images, encode_text}."""
    from ..models.expression.expression_estimator import load_estimator
    from ..models.face.face_analyzer import load_face_analyzer
    from ..models.files.onnx_providers import choose_providers
    from . import backbones

    provider = "CUDA" if device.startswith("cuda") else "CPU"
    analyzer = load_face_analyzer("antelopev2", insightface, choose_providers(provider), det_size=640)
    estimator = load_estimator(landmarker, smirk, device=device)
    family = backbones.family_of(model)
    encode_images, encode_text, _ = backbones.encoders(backbones.load_pipeline_without_transformer(model), family,
                                                       device)
    return {"analyzer": analyzer, "estimator": estimator, "family": family, "encode_images": encode_images,
            "encode_text": encode_text}


class ShardWriter:
    """Faces -> ``shard-00000.safetensors``, ... of ``shard_size`` faces each, VAE-encoded as each fills, so a large
    data set is never held whole."""

    def __init__(self, output: str, persons: list[str], encode_images, encode_text, family: str | None = None,
                 shard_size: int = 256):
        self.output, self.persons, self.family, self.shard_size = output, persons, family, shard_size
        self.encode_images, self.encode_text = encode_images, encode_text
        self.pending: list[Face] = []
        self.shards: list[str] = []
        self.faces = 0

    def add(self, faces: list[Face]) -> None:
        self.pending.extend(faces)
        while len(self.pending) >= self.shard_size:
            self._write()

    def close(self) -> list[str]:
        while self.pending:
            self._write()
        return self.shards

    def _write(self) -> None:
        faces = self.pending[:self.shard_size]
        del self.pending[:self.shard_size]
        with torch.no_grad():
            latents = torch.cat([self.encode_images(to_pixels([f.image for f in faces[i:i + CHUNK]]))
                                 for i in range(0, len(faces), CHUNK)])
        path = os.path.join(self.output, f"shard-{len(self.shards):05d}.safetensors")
        self.shards.append(os.path.basename(write_shard(path, faces, latents, self.persons, self.encode_text,
                                                        self.family)))
        self.faces += len(faces)


def build_dataset(root: str, output: str, analyzer, estimator, encode_images, encode_text, *, size: int = 512,
                  shard_size: int = 256, frame_step: int = 10, max_frames: int = 200,
                  default_caption: str = DEFAULT_CAPTION, family: str | None = None, on_progress=None,
                  overwrite: bool = False) -> dict:
    """Analyse every image and video under ``root`` and write shards to ``output``; returns the summary.

    ``encode_images(pixels (B, 3, H, W) in [-1, 1]) -> latents`` and ``encode_text(captions) ->
    {"prompt_embeds" (U, T, D)[, "pooled_prompt_embeds" (U, P)][, "prompt_mask" (U, T)]}`` are the
    backbone's VAE and text encoders (``training/backbones.py``); ``family`` is recorded in each shard. A data
    set already in ``output`` is replaced only with ``overwrite`` (its shards are removed first, so none is left
    over to mix with the new ones).
    """
    existing = _data_set_files(output)
    if existing and not overwrite:
        raise GenAffectInputError(f"{output} already holds a data set ({len(existing)} files, e.g. "
                                  f"{os.path.basename(existing[0])}); choose an empty folder, or pass --overwrite to "
                                  "replace it.")
    for path in existing:
        os.remove(path)
    unusable: list[str] = []
    sources = find_sources(root, default_caption, unusable)
    persons = sorted({source.person for source in sources})
    writer = ShardWriter(output, persons, encode_images, encode_text, family, shard_size)
    summary = {"persons": persons, "faces": 0, "skipped": unusable, "shards": writer.shards, "size": size}
    frames: list[tuple[Source, str, np.ndarray]] = []

    def analyse():
        found = extract_faces(frames, analyzer, estimator, size)
        writer.add(found.faces)
        summary["skipped"].extend(found.skipped)
        frames.clear()

    for number, source in enumerate(sources):
        for frame, rgb in frames_or_report(source.path, frame_step, max_frames, summary["skipped"]):
            origin = source.path if frame == 0 and source.path.lower().endswith(IMAGE_EXTENSIONS) else \
                f"{source.path}#{frame}"
            frames.append((source, origin, rgb))
            if len(frames) == CHUNK:
                analyse()
        if on_progress is not None:
            on_progress(number + 1, len(sources))
    if frames:
        analyse()
    writer.close()
    summary["faces"] = writer.faces
    if not summary["shards"]:
        raise NoFaceFoundError(f"no usable face in the {len(sources)} file(s) under {root}: "
                               f"{'; '.join(summary['skipped'][:5])}")
    with open(os.path.join(output, "dataset.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    log.info("GenAffect: %d faces of %d persons in %d shards; %d frames skipped.", summary["faces"], len(persons),
             len(summary["shards"]), len(summary["skipped"]))
    return summary


SHARD_FLOATS = {"latents": 4, "identity": 2, "prompt_embeds": 3, "pooled_prompt_embeds": 2, "blendshapes": 2,
                "flame": 2}  # float tensors and their number of dimensions
SHARD_INTEGERS = ("person", "caption", "prompt_mask")
SHARD_REQUIRED = ("latents", "identity", "person", "caption", "prompt_embeds")


def check_shard(path: str) -> int:
    """Check one shard before training reads it: a safetensors file in the shard format holding every tensor it
    needs, with consistent shapes, floating-point values that are all finite (a NaN would spread through the
    training silently), expressions in range and captions that exist. Returns its number of faces."""
    from safetensors import SafetensorError, safe_open

    rebuild = "rebuild the data set with training/build_dataset.py"

    def bad(what):
        return GenAffectInputError(f"{path}: {what}; {rebuild}.")

    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != SHARD_FORMAT:
                raise GenAffectInputError(f"{path} is not a GenAffect training shard (format "
                                          f"{metadata.get('format')!r}); {rebuild}.")
            missing = [key for key in SHARD_REQUIRED if key not in handle.keys()]
            if missing:
                raise bad(f"it has no {', '.join(missing)}")
            if not {"blendshapes", "flame"} & set(handle.keys()):
                raise bad("it holds no expressions (blendshapes or flame)")
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            faces, captions = shapes["latents"][0] if shapes["latents"] else 0, shapes["prompt_embeds"][0] if \
                shapes["prompt_embeds"] else 0
            if faces == 0:
                raise bad("it holds no faces")
            expected = {"latents": (faces,), "identity": (faces, 512), "person": (faces,), "caption": (faces,),
                        "blendshapes": (faces, 52), "flame": (faces, 55), "pooled_prompt_embeds": (captions,),
                        "prompt_mask": (captions,)}
            for key, shape in shapes.items():
                start = expected.get(key, ())
                if shape[:len(start)] != start or len(shape) != SHARD_FLOATS.get(key, len(shape)) or \
                        (key in ("person", "caption") and len(shape) != 1):
                    raise bad(f"{key} has shape {list(shape)}, which does not fit {faces} faces and {captions} captions")
            for key in shapes:
                tensor = handle.get_tensor(key)
                if key in SHARD_FLOATS:
                    if not tensor.is_floating_point():
                        raise bad(f"{key} is stored as {tensor.dtype}, not floating point")
                    if not bool(torch.isfinite(tensor).all()):
                        raise bad(f"{key} holds NaN or infinite values")
                elif key in SHARD_INTEGERS and tensor.is_floating_point():
                    raise bad(f"{key} is stored as {tensor.dtype}, not integers")
                if key == "blendshapes" and (tensor.min() < 0 or tensor.max() > 1):
                    raise bad("blendshapes run outside 0..1")
                if key == "caption" and (tensor.min() < 0 or tensor.max() >= captions):
                    raise bad(f"caption numbers run to {int(tensor.max())} but it holds {captions} captions")
                if key == "person" and tensor.min() < 0:
                    raise bad("person numbers are negative")
    except SafetensorError as error:
        raise bad(f"not a readable safetensors file ({error})") from None
    except OSError as error:
        raise bad(f"cannot be read ({error})") from None
    return faces


class ShardDataset(torch.utils.data.Dataset):
    """Training items from shards: the target's latents, caption embedding and expression, and the identity
    of another image of the same person (a cross-pair) where the person has one.

    With ``references`` (the edit setting of an instruction editor) each item also carries another photo
    of the same person as ``reference_latents``, and the identity is that photo's, as in ComfyUI where the
    photo being edited is also the one the identity is extracted from; persons with one image only cannot
    make such a pair and are left out (logged; an error when no person has two).

    Latents and text embeddings are read row by row from the files; identities are held in memory.
    When shards carry both blendshapes and FLAME-55, each item keeps one of them alone with probability
    ``drop_one`` (each side equally), so the adapter also works given only one.
    """

    TEXT = ("prompt_embeds", "pooled_prompt_embeds", "prompt_mask")

    def __init__(self, folder: str, cross_pairs: bool = True, drop_one: float = 0.3, references: bool = False):
        from safetensors import safe_open

        self.folder = folder
        self.paths = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith("shard-")
                            and n.endswith(".safetensors"))
        if not self.paths:
            raise GenAffectInputError(f"no shard-*.safetensors in {folder}; build the data set with "
                                      "training/build_dataset.py first.")
        self.rows: list[tuple[int, int]] = []
        identities, persons, keys, families, latent_shapes = [], [], [], set(), set()
        for number, path in enumerate(self.paths):
            check_shard(path)
            with safe_open(path, framework="pt") as handle:
                families.add((handle.metadata() or {}).get("family"))
                identities.append(handle.get_tensor("identity"))
                persons.append(handle.get_tensor("person"))
                keys.append(frozenset(handle.keys()))
                latent_shapes.add(tuple(handle.get_slice("latents").get_shape()[1:]))
            self.rows += [(number, row) for row in range(len(persons[-1]))]
        if len(latent_shapes) != 1:
            raise GenAffectInputError(f"the shards in {folder} hold latents of different sizes {sorted(latent_shapes)}; "
                                      "build all shards of one data set with the same --model and --size.")
        expressions = {frozenset(k & {"blendshapes", "flame"}) for k in keys}
        if len(expressions) != 1 or not next(iter(expressions)):
            raise GenAffectInputError(f"the shards in {folder} carry different expressions "
                                      f"({sorted(map(sorted, expressions))}); build them with one expression estimator.")
        if len(families) != 1 or len({k & set(self.TEXT) for k in keys}) != 1:
            raise GenAffectInputError(f"the shards in {folder} were built for different backbones "
                                      f"({sorted(map(str, families))}); build all shards of one data set with the "
                                      "same --model.")
        self.family = families.pop()  # None: shards written before the family was recorded
        self.text_keys = [key for key in self.TEXT if key in keys[0]]
        self.representations = sorted(next(iter(expressions)))  # "blendshapes" and/or "flame"
        self.identities = torch.cat(identities)
        person = torch.cat(persons)
        self.same_person = {int(p): torch.nonzero(person == p).flatten().tolist() for p in person.unique()}
        self.person = person.tolist()
        self.cross_pairs, self.drop_one, self.references = cross_pairs, drop_one, references
        self.order = list(range(len(self.rows)))  # the rows items are made of
        if references:
            self.order = [i for i in self.order if len(self.same_person[self.person[i]]) > 1]
            alone = sum(len(rows) == 1 for rows in self.same_person.values())
            if not self.order:
                raise GenAffectInputError(f"no person in {folder} has two images; the edit setting pairs a reference "
                                          "photo with another photo of the same person (one sub-folder per person).")
            if alone:
                log.warning("GenAffect: %d person(s) with a single image left out of the edit setting's pairs.", alone)
        self._handles: dict = {}

    @property
    def expression(self) -> str:
        """What the adapter trained on this data reads: "blendshapes", "flame" or "both"."""
        return "both" if len(self.representations) == 2 else self.representations[0]

    def __len__(self) -> int:
        return len(self.order)

    def _handle(self, shard: int):
        from safetensors import safe_open

        if shard not in self._handles:  # one per worker process: handles are opened after the fork
            self._handles[shard] = safe_open(self.paths[shard], framework="pt")
        return self._handles[shard]

    def _row(self, index: int, name: str) -> torch.Tensor:
        shard, row = self.rows[index]
        return self._handle(shard).get_slice(name)[row:row + 1][0]

    def partner(self, index: int) -> int:
        """Another image of the same person (torch's generator: seeded by the trainer, and differently in each
        data-loader worker); ``index`` itself where the person has no other or cross-pairs are off."""
        others = [i for i in self.same_person[self.person[index]] if i != index]
        if not others or not (self.cross_pairs or self.references):
            return index
        return others[int(torch.randint(len(others), ()))]

    def identity_for(self, index: int) -> torch.Tensor:
        return self.identities[self.partner(index)]

    def __getitem__(self, item: int) -> dict:
        index = self.order[item]
        shard, _ = self.rows[index]
        handle = self._handle(shard)
        caption = int(self._row(index, "caption"))
        vectors = {name: self._row(index, name)[None] for name in self.representations}
        if len(vectors) == 2 and float(torch.rand(())) < self.drop_one:
            del vectors[self.representations[int(torch.randint(2, ()))]]
        partner = self.partner(index)
        result = {
            "latents": self._row(index, "latents"),
            **{key: handle.get_slice(key)[caption:caption + 1][0] for key in self.text_keys},
            "identity": self.identities[partner],
            "expression": expression_input(vectors.get("blendshapes"), vectors.get("flame"), 1)[0],
        }
        if self.references:
            result["reference_latents"] = self._row(partner, "latents")
        return result
