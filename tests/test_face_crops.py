"""Per-face crops and stitching: exact geometry, the feathered core mask's values, every pixel outside the masks
bit-identical, and the rows each crop maps to."""

from __future__ import annotations

import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError
from genaffect.models.face.face_crops import (
    FRAMINGS,
    PAIRINGS,
    FaceCrop,
    FaceCrops,
    crop_image,
    pair_rows,
    plan_crop,
    stitch,
)

BOX = np.array([100.0, 100.0, 140.0, 140.0])
KEYPOINTS = np.array([[112, 114], [128, 114], [120, 122], [113, 131], [127, 131]], np.float32)


def plan(box=BOX, *, framing=FRAMINGS[0], context=2.0, size=80, core=1.3, feather=0.3, picture=0, face=0):
    return plan_crop(box, KEYPOINTS, framing=framing, context=context, size=size, core=core, feather=feather,
                     source=0, face=face, expression=0, picture=picture, label=f"face {face}")


def random_image(height=240, width=260, seed=0):
    """Float pixels that are not 8-bit values, so an exact copy cannot come from rounding."""
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


def test_an_upright_crop_at_one_pixel_per_pixel_is_an_exact_copy_of_its_window():
    crop = plan()  # side 2 x 40 = 80 pixels, crop size 80: one crop pixel per image pixel
    assert crop.scale == 1.0 and crop.matrix[0, 2] == -80.0 and crop.matrix[1, 2] == -80.0
    image = random_image()
    assert np.array_equal(crop_image(image, crop.matrix, crop.size), image[80:160, 80:160])
    np.testing.assert_allclose(crop.core_centre, [40.0, 40.0])
    np.testing.assert_allclose(crop.core_axes, [26.0, 26.0])  # 1.3 x the box's half side


def test_the_core_mask_is_one_inside_a_smoothstep_across_the_feather_and_exactly_zero_beyond():
    crop = FaceCrop(0, 0, 0, 0, np.eye(2, 3), 64, np.array([32.0, 32.0]), np.array([10.0, 20.0]), 0.5, "golden")
    radius = np.array([0.0, 1.0, 1.125, 1.25, 1.375, 1.5, 1.6])
    along_x = crop.mask(32.0 + 10.0 * radius, np.full_like(radius, 32.0))
    along_y = crop.mask(np.full_like(radius, 32.0), 32.0 + 20.0 * radius)
    golden = [1.0, 1.0, 0.84375, 0.5, 0.15625, 0.0, 0.0]
    assert along_x.tolist() == golden and along_y.tolist() == golden
    hard = FaceCrop(0, 0, 0, 0, np.eye(2, 3), 64, np.array([32.0, 32.0]), np.array([10.0, 20.0]), 0.0, "hard")
    assert hard.mask(np.array([41.9, 42.1]), np.array([32.0, 32.0])).tolist() == [1.0, 0.0]


def test_stitching_changes_only_pixels_under_the_masks_and_keeps_every_other_one_bit_identical():
    image = random_image()
    crops = [plan(face=0), plan(np.array([30.0, 150.0, 60.0, 180.0]), face=1, size=96, context=2.4)]
    geometry = FaceCrops(crops, [image.shape[:2]], [0], FRAMINGS[0])
    edited = [np.random.default_rng(5 + i).random((c.size, c.size, 3), dtype=np.float32) for i, c in enumerate(crops)]
    [picture], [mask] = stitch([image], edited, geometry)
    untouched = mask == 0
    assert np.array_equal(picture[untouched].view(np.uint32), image[untouched].view(np.uint32))
    changed = (picture != image).any(axis=-1)
    assert changed.sum() > 1000 and not (changed & untouched).any()
    assert mask.max() == 1.0 and np.all((mask >= 0) & (mask <= 1))
    assert np.array_equal(image, random_image())  # the input itself is never written


def test_an_unedited_crop_stitched_back_leaves_the_image_bit_identical():
    image = random_image()
    crop = plan()
    geometry = FaceCrops([crop], [image.shape[:2]], [0], FRAMINGS[0])
    [picture], _ = stitch([image], [crop_image(image, crop.matrix, crop.size)], geometry)
    assert np.array_equal(picture.view(np.uint32), image.view(np.uint32))


@pytest.mark.parametrize("framing, size, edited_size", [(FRAMINGS[0], 256, 256), (FRAMINGS[0], 256, 128),
                                                        (FRAMINGS[1], 128, 128)])
def test_a_crop_edited_at_any_size_goes_back_where_it_was_cut(framing, size, edited_size):
    """A smooth image cropped (enlarged, or FFHQ-rotated), optionally resized, and stitched back is close to itself
    under the mask: the geometry maps every pixel back to where it came from."""
    import cv2

    y, x = np.mgrid[0:240, 0:260].astype(np.float32)
    image = np.stack([0.5 + 0.4 * np.sin(x / 9.0), 0.5 + 0.4 * np.cos(y / 7.0), (x + y) / 600.0], axis=-1)
    crop = plan(framing=framing, size=size, context=1.7 if framing == FRAMINGS[1] else 2.0)
    cut = crop_image(image, crop.matrix, crop.size)
    if edited_size != size:
        cut = cv2.resize(cut, (edited_size, edited_size), interpolation=cv2.INTER_AREA)
    [picture], [mask] = stitch([image], [cut], FaceCrops([crop], [image.shape[:2]], [0], framing))
    inside = mask > 0
    assert inside.sum() > 500 and np.abs(picture - image)[inside].max() < 0.05


def test_a_mask_that_would_reach_the_crop_edge_is_refused_with_the_context_to_use():
    with pytest.raises(GenAffectInputError, match=r"raise context to about (\d\.\d)") as refused:
        plan(context=1.2, core=1.3, feather=0.5)
    named = float(refused.value.args[0].split("about ")[1].split(" ")[0])
    plan(context=named + 0.1, core=1.3, feather=0.5)  # the context it names is enough
    with pytest.raises(GenAffectInputError, match="multiple of 16"):
        plan(size=100)


def test_expression_rows_map_to_faces_in_order_or_every_expression_goes_on_every_face():
    # three chosen faces: two in image 0, one in image 1
    rows, pictures = pair_rows([0, 0, 1], 3, PAIRINGS[0])
    assert rows == [(0, 0, 0), (1, 1, 0), (2, 2, 1)] and pictures == [0, 1]
    rows, _ = pair_rows([0, 0, 1], 1, PAIRINGS[0])
    assert [row for _, row, _ in rows] == [0, 0, 0]
    rows, pictures = pair_rows([0, 0, 1], 2, PAIRINGS[1])
    assert rows == [(0, 0, 0), (1, 0, 0), (2, 0, 1), (0, 1, 2), (1, 1, 2), (2, 1, 3)] and pictures == [0, 1, 0, 1]
    with pytest.raises(GenAffectInputError, match="2 expressions for 3 chosen faces"):
        pair_rows([0, 0, 1], 2, PAIRINGS[0])


def test_edited_crops_must_be_one_square_per_crop():
    image = random_image()
    geometry = FaceCrops([plan()], [image.shape[:2]], [0], FRAMINGS[0])
    with pytest.raises(GenAffectInputError, match="2 edited crops for 1 crops"):
        stitch([image], [np.zeros((80, 80, 3), np.float32)] * 2, geometry)
    with pytest.raises(GenAffectInputError, match="go back square"):
        stitch([image], [np.zeros((80, 64, 3), np.float32)], geometry)
