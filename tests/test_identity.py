"""Identity extraction: face choice, skipping faceless references, aggregation and outliers."""

import logging

import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError
from genaffect.models.face import identity
from tiny_insightface import blank_image, faces_image

BIG_LEFT = dict(cx=64, cy=128, half=24)  # small box on the left, top score
SMALL_RIGHT_LOW = dict(cx=192, cy=128, half=48, blue=40)  # larger box on the right, lower score


def extract(analyzer, frames, **kwargs):
    return identity.extract_identity(analyzer, frames, **kwargs)[0]


@pytest.mark.parametrize(
    "order, index, expected_centre_x",
    [("largest", 0, 192), ("largest", 1, 64), ("highest score", 0, 64), ("left to right", 0, 64), ("left to right", 1, 192)],
)
def test_face_order_and_index_choose_the_face_in_a_photo_with_several(analyzer, order, index, expected_centre_x):
    frame = faces_image(dict(BIG_LEFT, identity=1), dict(SMALL_RIGHT_LOW, identity=2))
    ref = extract(analyzer, [frame], face_order=order, face_index=index).references[0]
    assert ref.faces_in_image == 2
    assert (ref.box[0] + ref.box[2]) / 2 == pytest.approx(expected_centre_x, abs=1)


def test_each_reference_says_which_of_its_detections_was_kept(analyzer):
    frame = faces_image(dict(BIG_LEFT, identity=1), dict(SMALL_RIGHT_LOW, identity=2))
    for order, index in (("largest", 1), ("left to right", 1), ("highest score", 0)):
        result, detections = identity.extract_identity(analyzer, [frame], face_order=order, face_index=index)
        ref = result.references[0]
        assert ref.detection_index == index
        assert np.array_equal(detections[0][ref.detection_index].box, ref.box)


def test_face_index_beyond_the_faces_found_skips_that_reference(analyzer, caplog):
    frames = [faces_image(dict(cx=96, cy=96)), faces_image(BIG_LEFT, SMALL_RIGHT_LOW)]
    with caplog.at_level(logging.WARNING):
        result = extract(analyzer, frames, face_index=1)
    assert [r.image_index for r in result.references] == [1]
    assert "only 1 face(s) found" in result.skipped[0].reason
    assert "reference image 0 skipped" in caplog.text


def test_faceless_reference_is_skipped_with_a_warning_and_the_rest_is_kept(analyzer, caplog):
    frames = [faces_image(dict(cx=128, cy=128, identity=1)), blank_image(), faces_image(dict(cx=96, cy=96, identity=1))]
    with caplog.at_level(logging.WARNING):
        result = extract(analyzer, frames)
    assert [r.image_index for r in result.references] == [0, 2]
    assert [(s.image_index, s.reason) for s in result.skipped] == [(1, "no face detected")]
    assert "reference image 1 skipped: no face detected" in caplog.text


def test_faceless_reference_is_an_error_when_asked(analyzer):
    with pytest.raises(GenAffectInputError, match="Reference image 1: no face detected.*on_no_face"):
        extract(analyzer, [faces_image(dict(cx=128, cy=128)), blank_image()], on_no_face="error")


def test_no_face_in_any_reference_is_an_error_listing_each_reason(analyzer):
    tiny = np.zeros((1, 1, 3), np.uint8)
    with pytest.raises(GenAffectInputError, match=r"No face found in any of the 2.*image 0: no face detected; image 1: 1x1 pixels"):
        extract(analyzer, [blank_image(), tiny])


def test_one_pixel_image_is_skipped_as_too_small(analyzer):
    result = extract(analyzer, [np.zeros((1, 1, 3), np.uint8), faces_image(dict(cx=128, cy=128))])
    assert result.skipped[0].reason == "1x1 pixels is too small to hold a face"


def test_identity_is_the_renormalised_mean_of_reference_embeddings(analyzer):
    frames = [faces_image(dict(cx=128, cy=128, identity=1)), faces_image(dict(cx=96, cy=160, half=56, identity=1))]
    result = extract(analyzer, frames)
    stacked = np.stack([r.embedding for r in result.references])
    expected = stacked.mean(0) / np.linalg.norm(stacked.mean(0))
    assert np.allclose(result.embedding, expected, atol=1e-6)
    assert np.linalg.norm(result.embedding) == pytest.approx(1.0, abs=1e-6)
    for ref in result.references:
        assert ref.cosine_to_identity == pytest.approx(float(ref.embedding @ expected), abs=1e-6)
        assert ref.crop_rgb.shape == (112, 112, 3)
    assert result.references[0].cosine_to_identity > 0.8  # same painted face at another size and place


def test_a_different_person_among_the_references_is_flagged(analyzer, caplog):
    same = [faces_image(dict(cx=128, cy=128, identity=1)), faces_image(dict(cx=120, cy=120, half=48, identity=1))]
    other = faces_image(dict(cx=128, cy=128, identity=5))
    with caplog.at_level(logging.WARNING):
        result = extract(analyzer, same + [other])
    assert result.outliers == [2]
    assert "reference image 2 looks like a different person" in caplog.text
    assert "<- looks like a different person" in result.report()


def test_dropping_outliers_leaves_them_out_of_the_identity(analyzer):
    same = [faces_image(dict(cx=128, cy=128, identity=1)), faces_image(dict(cx=120, cy=120, half=48, identity=1))]
    result = extract(analyzer, same + [faces_image(dict(cx=128, cy=128, identity=5))], drop_outliers=True)
    assert [r.image_index for r in result.references] == [0, 1]
    assert result.skipped[-1].reason == "dropped as an outlier"
    kept = np.stack([r.embedding for r in result.references]).mean(0)
    assert np.allclose(result.embedding, kept / np.linalg.norm(kept), atol=1e-6)


def test_two_references_of_different_people_warn_without_dropping_both(analyzer, caplog):
    frames = [faces_image(dict(cx=128, cy=128, identity=1)), faces_image(dict(cx=128, cy=128, identity=5))]
    with caplog.at_level(logging.WARNING):
        result = extract(analyzer, frames, drop_outliers=True)
    assert "two references look like different people" in caplog.text
    assert len(result.references) == 2 and result.outliers == []  # neither photo is singled out ...
    assert "note: the two references look like different people" in result.report()  # ... the pair is reported


def test_leave_one_out_cosine_on_known_vectors():
    a, b = np.eye(3, dtype=np.float32)[0], np.eye(3, dtype=np.float32)[1]
    cosines = identity.leave_one_out_cosines(np.stack([a, a, b]))
    # a vs mean(a, b) = 1/sqrt(2); b vs mean(a, a) = 0
    assert np.allclose(cosines, [1 / np.sqrt(2), 1 / np.sqrt(2), 0.0], atol=1e-6)
    assert np.isnan(identity.leave_one_out_cosines(a[None])).all()


def test_opposite_embeddings_cannot_form_an_identity():
    a = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    with pytest.raises(GenAffectInputError, match="cancel out"):
        identity.mean_identity(a)


def test_bad_options_are_errors(analyzer):
    frame = faces_image(dict(cx=128, cy=128))
    with pytest.raises(GenAffectInputError, match="face order"):
        extract(analyzer, [frame], face_order="tallest")
    with pytest.raises(GenAffectInputError, match="on_no_face"):
        extract(analyzer, [frame], on_no_face="ignore")
    with pytest.raises(GenAffectInputError, match="face_index"):
        extract(analyzer, [frame], face_index=-1)
