"""Alignment and colour handling on a real photo, from hand-measured keypoints (no detector needed).

The astronaut photo (scikit-image, public domain) has one frontal face; its five keypoints were
read off the image. The crop our analyzer feeds the recognizer is checked against an independent
similarity warp done with scikit-image in RGB, which also proves the BGR round trip keeps colours.
"""

import numpy as np
from skimage import data, transform

from genaffect.models.images import bgr_to_rgb, rgb_to_bgr

from sample_photos import ASTRONAUT_KEYPOINTS
from tiny_insightface import ARCFACE_TEMPLATE


def test_similarity_transform_maps_the_keypoints_onto_arcface_template():
    tform = transform.SimilarityTransform.from_estimate(ASTRONAUT_KEYPOINTS, ARCFACE_TEMPLATE)
    mapped = tform(ASTRONAUT_KEYPOINTS)
    # five points, four degrees of freedom: a face is not exactly the template, but close
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 4.0


def test_analyzer_crop_matches_an_independent_rgb_warp(analyzer):
    photo = data.astronaut()
    crop_bgr = analyzer.align(rgb_to_bgr(photo), ASTRONAUT_KEYPOINTS)
    assert crop_bgr.shape == (112, 112, 3) and crop_bgr.dtype == np.uint8
    crop_rgb = bgr_to_rgb(crop_bgr)

    tform = transform.SimilarityTransform.from_estimate(ASTRONAUT_KEYPOINTS, ARCFACE_TEMPLATE)
    reference = transform.warp(photo, tform.inverse, output_shape=(112, 112), order=1, preserve_range=True)
    difference = np.abs(crop_rgb.astype(np.float32) - reference.astype(np.float32))
    assert difference.mean() < 3.0, difference.mean()  # interpolation details differ, colours must not
    # the middle of the crop is the face (cheeks, nose): skin is red-dominant in RGB, not blue
    centre = crop_rgb[40:90, 30:80].reshape(-1, 3).mean(axis=0)
    assert centre[0] > centre[2] + 30, centre

