"""Every face of an image and the ones chosen: by number, and by identity on hand-built embeddings; then the Find
Faces -> Crop Faces -> Stitch Faces nodes on painted group photos with the tiny insightface models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from genaffect.models.errors import GenAffectInputError, NoFaceFoundError
from genaffect.models.evaluation import face_metrics
from genaffect.models.expression import expression_library
from genaffect.models.expression.expression_estimator import ExpressionEstimator
from genaffect.models.face.face_listing import ListedFace, choose_faces, parse_face_numbers
from genaffect.models.face.identity import Identity
from genaffect.nodes.multiface_nodes import GenAffectCropFaces, GenAffectFindFaces, GenAffectStitchFaces
from mediapipe_results import MarkerLandmarker
from tiny_insightface import faces_image, to_image_tensor

DIM = 512


def unit(seed: int, towards: np.ndarray | None = None, weight: float = 0.0) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM)
    vector /= np.linalg.norm(vector)
    if towards is not None:
        vector = weight * towards + np.sqrt(1 - weight ** 2) * vector
    return (vector / np.linalg.norm(vector)).astype(np.float32)


ALICE, BOB = unit(1), unit(2)


def face(image: int, number: int, embedding: np.ndarray) -> ListedFace:
    x = 40.0 * number
    return ListedFace(image, number, np.array([x, 0, x + 30, 30], np.float32), np.zeros((5, 2), np.float32), 0.9,
                      embedding, np.zeros((112, 112, 3), np.uint8))


def person(embedding: np.ndarray) -> Identity:
    return Identity(references=[], embedding=embedding, recognition_model="w600k_mbf.onnx")


def group_photos():
    """Image 0: Bob, Alice (cosine 0.6 to her reference), a stranger. Image 1: a stranger and Bob. Image 2: Alice
    alone, less alike (0.45)."""
    return [
        [face(0, 0, unit(10, BOB, 0.7)), face(0, 1, unit(11, ALICE, 0.6)), face(0, 2, unit(12))],
        [face(1, 0, unit(13)), face(1, 1, unit(14, BOB, 0.65))],
        [face(2, 0, unit(15, ALICE, 0.45))],
    ]


def test_the_face_matching_an_identity_is_chosen_in_each_image_and_images_without_it_are_skipped():
    listing = choose_faces(group_photos(), [(30, 120)] * 3, order="left to right", identity=person(ALICE),
                           min_similarity=0.35, recognition_model="w600k_mbf.onnx")
    assert [(f.image_index, f.number) for f in listing.chosen] == [(0, 1), (2, 0)]
    assert [s.image_index for s in listing.skipped] == [1]
    assert "nearest, face 1, has cosine" in listing.skipped[0].reason
    bob = choose_faces(group_photos(), [(30, 120)] * 3, order="left to right", identity=person(BOB), on_no_face="skip")
    assert [(f.image_index, f.number) for f in bob.chosen] == [(0, 0), (1, 1)]
    strict = choose_faces(group_photos(), [(30, 120)] * 3, order="left to right", identity=person(ALICE),
                          min_similarity=0.5)
    assert [(f.image_index, f.number) for f in strict.chosen] == [(0, 1)]
    with pytest.raises(GenAffectInputError, match="Image 1: no face is like the identity"):
        choose_faces(group_photos(), [(30, 120)] * 3, order="left to right", identity=person(ALICE),
                     on_no_face="error")


def test_faces_are_chosen_by_number_and_an_identity_chooses_among_those_numbers():
    listing = choose_faces(group_photos(), [(30, 120)] * 3, order="left to right", which="0, 2")
    assert [(f.image_index, f.number) for f in listing.chosen] == [(0, 0), (0, 2), (1, 0), (2, 0)]
    among = choose_faces(group_photos(), [(30, 120)] * 3, order="left to right", which="0, 2", identity=person(ALICE))
    assert [(f.image_index, f.number) for f in among.chosen] == [(2, 0)]  # image 0's Alice is face 1, not allowed
    assert parse_face_numbers("all") is None and parse_face_numbers(" 1-3, 0;5 ") == [1, 2, 3, 0, 5]
    for bad, message in (("two", "not a face number"), ("3-1", "runs backwards")):
        with pytest.raises(GenAffectInputError, match=message):
            parse_face_numbers(bad)
    with pytest.raises(NoFaceFoundError, match="faces 7 asked for"):
        choose_faces(group_photos(), [(30, 120)] * 3, order="left to right", which="7")


def test_an_identity_from_another_recognizer_is_refused():
    other = Identity(references=[], embedding=ALICE, recognition_model="glintr100.onnx")
    with pytest.raises(GenAffectInputError, match="different recognizers"):
        choose_faces(group_photos(), [(30, 120)] * 3, order="left to right", identity=other,
                     recognition_model="models/w600k_mbf.onnx")


def test_an_identity_of_several_people_gives_each_image_its_own_person_also_in_rounds():
    people = Identity(references=[], embedding=ALICE, person_embeddings=np.stack([ALICE, BOB]),
                      person_of_image=[0, 1, 1])
    assert np.array_equal(people.embeddings_for(6), np.stack([ALICE, BOB, BOB] * 2))
    assert np.array_equal(people.for_rows([2, 0]).embeddings_for(2), np.stack([BOB, ALICE]))
    with pytest.raises(GenAffectInputError, match="needs one person's identity"):
        people.one_person("GenAffect DiT adapter")
    # consistency is measured between images of one person only
    embeddings = np.stack([ALICE, BOB, unit(20, BOB, 0.8)])
    mean, low = face_metrics.pairwise_consistency(embeddings, [0, 1, 1])
    assert mean == pytest.approx(float(BOB @ embeddings[2])) and low == mean


# ---- the nodes, on painted faces the tiny models find ---------------------------------------------


def group(*identities, half=24):
    return faces_image(*[dict(cx=48 + 80 * i, cy=128, half=half, identity=who) for i, who in enumerate(identities)])


def find(analyzer, images, **options):
    estimator = ExpressionEstimator(MarkerLandmarker(), "marker")
    settings = dict(face_order="left to right", faces="all", on_no_face="error", estimator=estimator)
    return GenAffectFindFaces().find(analyzer, images, **{**settings, **options})


def test_find_faces_numbers_every_face_reads_each_one_and_picks_the_person_asked_for(analyzer):
    extract = __import__("genaffect").NODE_CLASS_MAPPINGS["GenAffectExtractIdentity"]()
    [bob] = extract.extract(analyzer, to_image_tensor(faces_image(dict(cx=128, cy=128, identity=2))), "largest", 0,
                            "error")[:1]
    images = to_image_tensor(group(1, 2, 3), group(3, 1, 2))
    listing, expression, preview, report = find(analyzer, images, identity=bob)
    assert [len(faces) for faces in listing.faces] == [3, 3]
    assert [(f.image_index, f.number) for f in listing.chosen] == [(0, 1), (1, 2)]
    assert all(f.blendshapes is not None and f.landmarks is not None for faces in listing.faces for f in faces)
    chosen = listing.chosen[0]  # its landmarks are carried back from the reading crop to the whole image
    centre = chosen.landmarks[:, :2].mean(axis=0) * [256, 256]
    assert np.allclose(centre, [(chosen.box[0] + chosen.box[2]) / 2, (chosen.box[1] + chosen.box[3]) / 2], atol=4)
    assert expression.labels == ["image 0 face 1", "image 1 face 2"] and expression.blendshapes.shape == (2, 52)
    assert preview.shape == images.shape and "CHOSEN as row 1" in report
    # the preview marks the chosen face green and the others amber
    frame = (preview[0].numpy() * 255).round().astype(np.uint8)
    x1, y1 = (int(v) for v in chosen.box[:2])
    assert tuple(frame[y1 + 12, x1]) == (60, 220, 90)
    other = listing.faces[0][0]
    assert tuple(frame[int(other.box[1]) + 12, int(other.box[0])]) == (250, 190, 40)


def test_crop_edit_and_stitch_changes_only_the_chosen_faces_and_every_expression_can_go_on_every_face(analyzer):
    images = to_image_tensor(group(1, 2, 3))
    listing = find(analyzer, images, faces="0, 2")[0]
    presets = expression_library.presets(["happy", "sad"], 1.0)
    crops, crop_list, expression, identity, geometry, masks, _ = GenAffectCropFaces().crop(
        images, listing, presets, "every expression on every face", "upright", 128, 2.2, 1.3, 0.3)
    assert crops.shape == (4, 128, 128, 3) and len(crop_list) == 4 and masks.shape == (4, 128, 128)
    assert expression.labels == ["happy", "happy", "sad", "sad"] and geometry.people == [0, 1, 0, 1]
    assert identity.person_of_image == [0, 1, 0, 1] and len(identity.references) == 2
    pictures, changed, report = GenAffectStitchFaces().stitch(images, 1.0 - crops, geometry)
    assert pictures.shape == (2, 256, 256, 3) and changed.shape == (2, 256, 256)  # one picture per expression
    untouched = changed == 0
    assert torch.equal(pictures[untouched], images.expand(2, -1, -1, -1)[untouched])
    middle = listing.faces[0][1].box.astype(int)  # face 1 was not chosen: not one of its pixels moves
    assert torch.equal(pictures[:, middle[1]:middle[3], middle[0]:middle[2]],
                       images.expand(2, -1, -1, -1)[:, middle[1]:middle[3], middle[0]:middle[2]])
    assert "crop 3: image 0 face 2 as 'sad' -> picture 1" in report


def test_one_expression_per_face_needs_one_row_per_chosen_face_and_other_images_are_refused(analyzer):
    images = to_image_tensor(group(1, 2, 3))
    listing = find(analyzer, images)[0]
    with pytest.raises(GenAffectInputError, match="2 expressions for 3 chosen faces"):
        GenAffectCropFaces().crop(images, listing, expression_library.presets(["happy", "sad"], 1.0),
                                  "one expression per face", "upright", 128, 2.2, 1.3, 0.3)
    with pytest.raises(GenAffectInputError, match="same images as Find Faces"):
        GenAffectCropFaces().crop(images[:, :128], listing, expression_library.presets(["happy"], 1.0),
                                  "one expression per face", "upright", 128, 2.2, 1.3, 0.3)
