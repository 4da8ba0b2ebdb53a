"""FFHQ-style alignment: the geometry of FFHQ's recipe from 5 keypoints, and the Align Face node."""

import cv2
import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError
from genaffect.models.face.face_align import align_ffhq, ffhq_square, square_to_output
from genaffect.nodes.face_nodes import GenAffectAlignFace, GenAffectFaceAnalyzerLoader
from sample_photos import ASTRONAUT_KEYPOINTS
from skimage import data
from tiny_insightface import blank_image, faces_image, to_image_tensor


def _mapped(matrix, points):
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def _rotation(angle_degrees, centre, points):
    matrix = cv2.getRotationMatrix2D(tuple(map(float, centre)), angle_degrees, 1.0)
    return matrix, _mapped(matrix, points)


def test_ffhq_square_follows_the_recipe_for_an_upright_face():
    # eyes 60 px apart, mouth 70 px below them: the square is 2 x max(2 x 60, 1.8 x 70) wide,
    # centred 0.1 of the eye-to-mouth distance below the eyes
    keypoints = np.array([[70, 100], [130, 100], [100, 135], [75, 170], [125, 170]], dtype=np.float64)
    square = ffhq_square(keypoints)
    half = max(2 * 60, 1.8 * 70)
    centre = np.array([100, 100 + 7])
    np.testing.assert_allclose(square, [centre + [-half, -half], centre + [-half, half],
                                        centre + [half, half], centre + [half, -half]], atol=1e-9)


def test_aligned_face_has_level_eyes_at_the_same_place_whatever_the_tilt():
    size = 512
    upright = square_to_output(ffhq_square(ASTRONAUT_KEYPOINTS), size)
    expected = _mapped(upright, ASTRONAUT_KEYPOINTS)
    for angle in (-35, 20, 90):
        _, tilted = _rotation(angle, (256, 256), ASTRONAUT_KEYPOINTS)
        placed = _mapped(square_to_output(ffhq_square(tilted), size), tilted)
        np.testing.assert_allclose(placed, expected, atol=1e-3)
    eyes = expected[:2]
    # nearly level: FFHQ's horizontal averages the eye line with the perpendicular of eyes-to-mouth
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.01 * size
    assert size * 0.3 < eyes[0, 0] < size / 2 < eyes[1, 0] < size * 0.7


def test_rotated_and_enlarged_photos_give_the_same_crop():
    photo = data.astronaut()
    reference = align_ffhq(photo, ASTRONAUT_KEYPOINTS, 256)
    matrix, tilted_points = _rotation(25, (256, 256), ASTRONAUT_KEYPOINTS)
    tilted = cv2.warpAffine(photo, matrix, (512, 512), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    from_tilted = align_ffhq(tilted, tilted_points, 256)
    big = cv2.resize(photo, (2048, 2048), interpolation=cv2.INTER_CUBIC)  # takes the shrink-first path
    from_big = align_ffhq(big, ASTRONAUT_KEYPOINTS * 4 + 1.5, 256)
    for other in (from_tilted, from_big):
        assert other.shape == (256, 256, 3) and other.dtype == np.uint8
        assert np.abs(other.astype(float) - reference).mean() < 6.0
    assert np.abs(reference.astype(float) - cv2.resize(photo, (256, 256))).mean() > 30  # it did crop


def test_unusable_keypoints_are_refused():
    with pytest.raises(GenAffectInputError, match="5 finite"):
        ffhq_square(np.full((5, 2), np.nan))
    with pytest.raises(GenAffectInputError, match="coincide"):
        ffhq_square(np.zeros((5, 2)))


def test_align_face_node_skips_photos_without_a_face(tiny_pack):
    analyzer, _ = GenAffectFaceAnalyzerLoader().load("antelopev2", "pack default", "auto", 256, 0.5)
    frames = to_image_tensor(faces_image(dict(cx=128, cy=120)), blank_image())
    aligned, report = GenAffectAlignFace().align(analyzer, frames, 128, "largest", 0, "skip")
    assert tuple(aligned.shape) == (1, 128, 128, 3)
    assert "aligned 1 of 2" in report and "image 1: no face detected" in report
    # the painted face's centre (its saturated red marker) lands in the middle, the grey page in the corners
    middle = aligned[0, 61:67, 61:67].numpy()
    assert middle[..., 0].min() > 0.9 and middle[..., 2].max() < 0.1
    assert np.allclose(aligned[0, :4, :4].numpy(), 128 / 255, atol=0.02)
    with pytest.raises(GenAffectInputError, match="Photo 1: no face detected"):
        GenAffectAlignFace().align(analyzer, frames, 128, "largest", 0, "error")
    with pytest.raises(GenAffectInputError, match="No face found in any of the 1 photo"):
        GenAffectAlignFace().align(analyzer, to_image_tensor(blank_image()), 128, "largest", 0, "skip")


@pytest.mark.parametrize("size", [0, -64, 2.5, float("nan"), 100_000])
def test_an_aligned_size_that_is_not_a_sensible_whole_number_of_pixels_is_refused_naming_it(tiny_pack, size):
    from genaffect.models.face.face_align import align_photos

    analyzer, _ = GenAffectFaceAnalyzerLoader().load("antelopev2", "pack default", "auto", 256, 0.5)
    photo = faces_image(dict(cx=128, cy=128, half=40))
    with pytest.raises(GenAffectInputError, match="^size is "):
        align_photos(analyzer, [photo], size=size)  # the engine, as scripts call it
    with pytest.raises(GenAffectInputError, match="^size is "):
        GenAffectAlignFace().align(analyzer, to_image_tensor(photo), size, "largest", 0, "skip")  # the node
