"""Several faces in one image: list and choose them, crop each for an editor, stitch the edits back (category
GenAffect/face)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..models.drawing.pictures import draw_numbered_faces
from ..models.errors import GenAffectInputError
from ..models.expression.batch import ExpressionBatch
from ..models.expression.face_reading import read_faces
from ..models.face import face_choice, face_listing
from ..models.face.face_crops import FRAMINGS, PAIRINGS, FaceCrops, crop_image, pair_rows, plan_crop, stitch
from ..models.images import image_batch_to_rgb_uint8, rgb_uint8_to_image_batch
from . import comfy_host, sockets

log = logging.getLogger(__name__)
READ = ("blendshapes", "head_pose", "landmarks", "flame")


class GenAffectFindFaces:
    DESCRIPTION = (
        "Lists every face of each image - box, keypoints, identity (ArcFace) and, with an estimator, its current "
        "expression, head pose and landmarks - numbered in the chosen order, and chooses the ones to work on: all, "
        "some by number ('0, 2', '1-3'), or, with an identity connected, the face most like that person. The chosen "
        "faces are rows 0, 1, ... in that order (image by image): row i of the target expressions goes to chosen face "
        "i in Crop Faces. The preview shows each face's number and, for chosen ones, its row."
    )
    CATEGORY = "GenAffect/face"
    FUNCTION = "find"
    RETURN_TYPES = (sockets.FACES, sockets.EXPRESSION, "IMAGE", "STRING")
    RETURN_NAMES = ("faces", "expression", "preview", "report")
    OUTPUT_TOOLTIPS = (
        "Every face found and the chosen ones, for Crop Faces.",
        "The chosen faces' current expressions, one row per chosen face (with an estimator; else labels only).",
        "Each image with its faces numbered; chosen ones green with their row ('2 -> 0': face 2 is row 0).",
        "Per face: box, score, cosine to the identity, head pose, and whether (and as which row) it was chosen.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "face_analyzer": (sockets.FACE_ANALYZER, {"tooltip": "From GenAffect Face Analyzer Loader."}),
                "images": ("IMAGE", {"tooltip": "A photo of several people (or a batch of photos)."}),
                "face_order": (list(face_choice.FACE_ORDERS), {
                    "default": "left to right",
                    "tooltip": "How each image's faces are numbered: by position from the left, by box size, or by "
                               "detector confidence. The numbers are the ones the preview shows."}),
                "faces": ("STRING", {"default": face_listing.ALL,
                                     "tooltip": "Which faces: 'all', numbers such as '0, 2', or a range '1-3' (from "
                                                "0, in face_order). With an identity: among these, the one most like "
                                                "it."}),
                "on_no_face": (list(face_choice.NO_FACE_POLICIES), {
                    "tooltip": "An image where no face is chosen: skip it (with a warning) or stop."}),
            },
            "optional": {
                "estimator": (sockets.EXPRESSION_ESTIMATOR, {
                    "tooltip": "From Expression Estimator Loader: also read each face's expression, head pose and "
                               "landmarks (on a crop around it, so small faces in group photos are read too)."}),
                "identity": (sockets.IDENTITY, {
                    "tooltip": "Choose the face of this person (Extract Identity on photos of them, with the same "
                               "face analyzer): in each image, the face most like it."}),
                "min_similarity": ("FLOAT", {"default": face_listing.DEFAULT_MIN_SIMILARITY, "min": -1.0, "max": 1.0,
                                             "step": 0.01,
                                             "tooltip": "With an identity: the lowest ArcFace cosine that counts as "
                                                        "that person (other people measure below ~0.3)."}),
            },
        }

    def find(self, face_analyzer, images, face_order, faces, on_no_face, estimator=None, identity=None,
             min_similarity=face_listing.DEFAULT_MIN_SIMILARITY):
        frames = image_batch_to_rgb_uint8(images, what="Find Faces images")
        listed = face_listing.list_faces(face_analyzer, frames, face_order, comfy_host.progress_callback(len(frames)))
        listing = face_listing.choose_faces(
            listed, [frame.shape[:2] for frame in frames], order=face_order, which=faces, identity=identity,
            min_similarity=min_similarity, on_no_face=on_no_face,
            recognition_model=face_analyzer.files.get("recognition", ""))
        if estimator is not None:
            every = [face for image_faces in listed for face in image_faces]
            for face, reading in zip(every, read_faces(estimator, frames, [(f.image_index, f.box) for f in every])):
                for name in READ if reading is not None else ():
                    setattr(face, name, reading[name])
        rows = {id(face): row for row, face in enumerate(listing.chosen)}
        preview = [draw_numbered_faces(frame, listed[index], rows, f"image {index}: {len(listed[index])} face(s)")
                   for index, frame in enumerate(frames)]
        report = listing.report()
        log.info("GenAffect %s", report)
        return (listing, chosen_expressions(listing.chosen), rgb_uint8_to_image_batch(preview), report)


def chosen_expressions(chosen: list[face_listing.ListedFace]) -> ExpressionBatch:
    """The chosen faces' expressions as read; a representation missing on any face is left out (and said)."""
    values = {}
    for name in READ:
        parts = [getattr(face, name) for face in chosen]
        values[name] = np.stack(parts) if all(p is not None for p in parts) else None
    unread = [face.name for face in chosen if face.blendshapes is None]
    if unread and any(face.blendshapes is not None for face in chosen):
        log.warning("GenAffect Find Faces: the estimator read no face at %s, so the expression output carries no "
                    "blendshapes; crop those faces larger or lower the estimator's min_confidence.", ", ".join(unread))
    return ExpressionBatch(labels=[face.name for face in chosen], **values)


class GenAffectCropFaces:
    DESCRIPTION = (
        "Cuts each chosen face (Find Faces) out with context, at the editing model's working size, as a batch to edit "
        "together: upright for the instruction editors (Qwen-Image-Edit, FLUX.2, Kontext), FFHQ-aligned for Arc2Face's "
        "Reference Adapter. Row i of the expressions goes to chosen face i (or one to all); or every expression on "
        "every face. Outputs the crops (a batch, and a list for the per-image edit encoders), each crop's target "
        "expression and person, the geometry for Stitch Faces and each crop's core mask."
    )
    CATEGORY = "GenAffect/face"
    FUNCTION = "crop"
    RETURN_TYPES = ("IMAGE", "IMAGE", sockets.EXPRESSION, sockets.IDENTITY, sockets.FACE_CROPS, "MASK", "STRING")
    RETURN_NAMES = ("crops", "crop_list", "expression", "identity", "face_crops", "crop_masks", "report")
    OUTPUT_IS_LIST = (False, True, False, False, False, False, False)
    OUTPUT_TOOLTIPS = (
        "The crops as one batch (VAE Encode -> the sampler's latent, one image per crop).",
        "The same crops as a list: an edit encoder (TextEncodeQwenImageEditPlus, VAE Encode -> Reference Latent) "
        "runs once per crop, paired with that crop's instruction.",
        "Each crop's target expression (Expression To Prompt, Conditioning Intensity, Face Metrics, the guard).",
        "Each crop's person (Face Metrics, the guard, Arc2Face Conditioning: one identity per crop).",
        "Where each crop goes back, for Stitch Faces (and the samplers' face_crops: share only within a person).",
        "Each crop's feathered core mask, crop-sized (e.g. the sampler's region).",
        "Which face and expression each crop is, and into which picture it goes.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images Find Faces listed."}),
                "faces": (sockets.FACES, {"tooltip": "From GenAffect Find Faces."}),
                "expression": (sockets.EXPRESSION, {
                    "tooltip": "Target expressions: one per chosen face (row i -> chosen face i) or one for all; with "
                               "'every expression on every face', any number."}),
                "pairing": (list(PAIRINGS), {
                    "tooltip": "One expression per face: one picture per image, each chosen face with its row. Every "
                               "expression on every face: one picture per expression (crops expression by "
                               "expression)."}),
                "framing": (list(FRAMINGS), {
                    "tooltip": "upright: a square around the face box (the instruction editors). FFHQ-aligned: eyes "
                               "level, the face placed as in FFHQ (Arc2Face's Reference Adapter was trained on it)."}),
                "size": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 16,
                                 "tooltip": "Crop side in pixels: the model's working size (Qwen-Image-Edit, FLUX.2, "
                                            "Kontext ~1024; Arc2Face 512)."}),
                "context": ("FLOAT", {"default": 2.2, "min": 1.0, "max": 6.0, "step": 0.05,
                                      "tooltip": "upright: crop side over the face box's side (hair and shoulders "
                                                 "give the editor context). FFHQ-aligned: 1 is FFHQ's framing, more "
                                                 "widens it."}),
                "core": ("FLOAT", {"default": 1.3, "min": 0.5, "max": 3.0, "step": 0.05,
                                   "tooltip": "The stitched region: an ellipse this many times the face box (1.3 "
                                              "covers brows to chin)."}),
                "feather": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.05,
                                      "tooltip": "How far beyond the core the edit fades out, as a share of the core's "
                                                 "radius (0: a hard edge)."}),
            },
        }

    def crop(self, images, faces, expression, pairing, framing, size, context, core, feather):
        listing = _listing_of(faces)
        frames = _float_frames(images, listing, "Crop Faces images")
        chosen = listing.chosen
        pairs, sources = pair_rows([face.image_index for face in chosen], len(expression), pairing)
        plans = [plan_crop(
            chosen[face].box, chosen[face].keypoints, framing=framing, context=context, size=size, core=core,
            feather=feather, source=chosen[face].image_index, face=face, expression=row, picture=picture,
            label=f"{chosen[face].name} as '{expression.labels[row]}'") for face, row, picture in pairs]
        geometry = FaceCrops(plans, list(listing.image_sizes), sources, framing)
        cut = [crop_image(frames[plan.source], plan.matrix, plan.size) for plan in plans]
        crops = torch.from_numpy(np.stack(cut))
        masks = torch.from_numpy(np.stack([plan.crop_mask() for plan in plans]))
        identity = face_listing.people_identity(chosen, geometry.people, listing.recognition_model)
        report = geometry.report()
        log.info("GenAffect %s", report)
        return (crops, [crops[i:i + 1] for i in range(len(plans))], expression.rows([row for _, row, _ in pairs]),
                identity, geometry, masks, report)


class GenAffectStitchFaces:
    DESCRIPTION = (
        "Puts edited crops (Crop Faces -> an editor) back into their images: each is scaled back to where it was cut "
        "and blended in under its feathered core mask. Every pixel outside the masks - the background and the people "
        "not chosen - stays exactly as it was. One picture per image (or per expression and image)."
    )
    CATEGORY = "GenAffect/face"
    FUNCTION = "stitch"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("images", "masks", "report")
    OUTPUT_TOOLTIPS = (
        "The pictures with the edited faces in place.",
        "Where each picture changed (1 = the edit, 0 = untouched): e.g. for core's ImageCompositeMasked.",
        "Which crops went into which picture.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images Crop Faces cut from."}),
                "edited": ("IMAGE", {"tooltip": "The edited crops, one per crop in Crop Faces' order (e.g. VAE Decode "
                                                "of the sampler's latents); another square size is scaled back."}),
                "face_crops": (sockets.FACE_CROPS, {"tooltip": "From GenAffect Crop Faces."}),
            },
        }

    def stitch(self, images, edited, face_crops):
        geometry = _crops_of(face_crops)
        frames = _float_frames(images, geometry, "Stitch Faces images")
        crops = _float_frames(edited, None, "Stitch Faces edited crops")
        pictures, masks = stitch(frames, crops, geometry)
        return (torch.from_numpy(np.stack(pictures)), torch.from_numpy(np.stack(masks)), geometry.report())


def _listing_of(value) -> face_listing.FaceListing:
    if isinstance(value, face_listing.FaceListing):
        return value
    raise GenAffectInputError(f"faces is a {type(value).__name__}; take the faces output of GenAffect Find Faces.")


def _crops_of(value) -> FaceCrops:
    if isinstance(value, FaceCrops):
        return value
    raise GenAffectInputError(f"face_crops is a {type(value).__name__}; take the face_crops output of GenAffect Crop "
                              "Faces.")


def _float_frames(images, described, what: str) -> list[np.ndarray]:
    """An IMAGE batch as float32 (H, W, 3) arrays, exactly its values (no rounding to 8 bits: stitched pictures keep
    every untouched pixel as it came). Checked like every image input; ``described`` (a listing or crops) must
    describe images of these sizes."""
    image_batch_to_rgb_uint8(images, what=what)  # the one check of layout, range and NaNs
    pixels = (images if images.ndim == 4 else images.unsqueeze(0)).detach().to("cpu", torch.float32)
    pixels = (pixels[..., :1].expand(*pixels.shape[:-1], 3) if pixels.shape[-1] < 3 else pixels[..., :3]).numpy()
    if described is not None:
        sizes = [tuple(size) for size in described.image_sizes]
        if len(sizes) != len(pixels) or any(size != pixels.shape[1:3] for size in sizes):
            raise GenAffectInputError(f"{what}: {len(pixels)} image(s) of {pixels.shape[2]}x{pixels.shape[1]}, but the "
                                      f"faces were found in {len(sizes)} image(s) of {sizes[0][1]}x{sizes[0][0]}; give "
                                      "this node the same images as Find Faces.")
    return list(pixels)
