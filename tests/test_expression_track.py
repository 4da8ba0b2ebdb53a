"""Expression tracks: the One-Euro smoothing and the gap bridging on synthetic curves with known answers, then a
painted "video" followed by identity with the tiny insightface models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from genaffect.models.errors import GenAffectInputError
from genaffect.models.expression.batch import BLENDSHAPE_INDEX
from genaffect.models.expression.expression_estimator import ExpressionEstimator
from genaffect.models.expression.expression_track import (
    OneEuro,
    bridge,
    gaps_of,
    jitter,
    one_euro,
    smooth,
    track_expressions,
)
from genaffect.nodes.track_nodes import GenAffectExpressionTrack
from mediapipe_results import MarkerLandmarker
from tiny_insightface import faces_image, to_image_tensor

RATE = 25.0
STEADY = OneEuro(min_cutoff=2.0, beta=0.0)  # a fixed cutoff: a plain exponential smoother with a known lag


def test_a_still_curve_stays_exactly_where_it_is():
    still = np.full((40, 3), [0.2, 0.7, -12.5])
    assert np.allclose(smooth(still, RATE), still, atol=1e-12, rtol=0)


def test_on_a_ramp_the_causal_filter_lags_by_the_known_amount_and_the_two_way_filter_not_at_all():
    speed = 0.01  # per frame
    ramp = speed * np.arange(200.0)
    alpha = 1.0 / (1.0 + RATE / (2 * math.pi * STEADY.min_cutoff))
    lag = speed * (1 - alpha) / alpha  # an exponential smoother's steady-state lag on a ramp
    causal = one_euro(ramp, RATE, STEADY)
    assert np.allclose(ramp[100:] - causal[100:], lag, atol=1e-9)
    two_way = smooth(ramp, RATE, STEADY)
    assert np.abs(two_way[50:150] - ramp[50:150]).max() < 1e-9


def test_a_sudden_change_stays_where_it_happens_with_the_two_way_filter():
    step = np.where(np.arange(100) < 50, 0.0, 1.0)
    for settings in (OneEuro(min_cutoff=1.0, beta=0.0), OneEuro(min_cutoff=1.0, beta=2.0)):
        two_way = smooth(step, RATE, settings)
        # the backward pass mirrors the forward one: the curve is point-symmetric about the step (frame 49.5, 0.5)
        assert two_way[49] < 0.5 < two_way[50] and two_way[49] + two_way[50] == pytest.approx(1.0, abs=1e-12)
    causal = one_euro(step, RATE, OneEuro(min_cutoff=1.0, beta=0.0))
    assert int(np.argmax(causal >= 0.5)) == 53  # alpha 0.2: half way after 1 - 0.8^n >= 0.5, n = 4 frames


def test_smoothing_takes_most_of_the_jitter_out_of_a_noisy_still_face():
    noise = np.random.default_rng(0).normal(0.0, 0.02, size=(250, 5))
    noisy = 0.4 + noise
    assert jitter(noisy) == pytest.approx(0.02 * math.sqrt(6), rel=0.1)  # white noise: sigma x sqrt(1 + 4 + 1)
    assert jitter(smooth(noisy, RATE)) < 0.25 * jitter(noisy)  # 0.17 measured with the defaults
    assert jitter(np.arange(10.0)) == 0.0 and jitter(np.array([1.0, -1.0] * 5)) == 4.0


def test_frames_without_the_face_are_bridged_by_straight_lines_and_held_at_the_ends():
    values = np.array([[np.nan], [0.0], [np.nan], [np.nan], [3.0], [np.nan]])
    present = np.array([False, True, False, False, True, False])
    assert bridge(values, present)[:, 0].tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 3.0]
    assert [(g.start, g.end, g.frames) for g in gaps_of(present)] == [(0, 0, 1), (2, 3, 2), (5, 5, 1)]
    with pytest.raises(GenAffectInputError, match="no frame has the face"):
        bridge(values, np.zeros(6, bool))


# ---- a painted video: the person (texture 1) moves, leaves for two frames, and a second person comes in ----

def video():
    frames = []
    for t in range(12):
        faces = [] if t in (4, 5) else [dict(cx=64 + 8 * (t // 2), cy=128, half=32, identity=1)]
        if t >= 7:  # someone else, larger, on the right: "largest" would pick them
            faces.append(dict(cx=200, cy=96, half=48, identity=2))
        frames.append(faces_image(*faces))
    return frames


def jaw_scores(count: int) -> list[np.ndarray]:
    """The landmarker double's readings, one per call in order: jawOpen rises 0.1 a reading."""
    scores = []
    for k in range(count):
        row = np.zeros(52)
        row[BLENDSHAPE_INDEX["jawOpen"]] = 0.1 * k
        scores.append(row)
    return scores


def test_the_person_is_followed_by_identity_through_a_gap_and_past_a_larger_stranger(analyzer):
    estimator = ExpressionEstimator(MarkerLandmarker(jaw_scores(10)), "marker")
    track = track_expressions(analyzer, estimator, video(), RATE, settings=STEADY, step=2)
    assert track.present.tolist() == [t not in (4, 5) for t in range(12)]
    assert [(g.start, g.end) for g in track.gaps] == [(4, 5)]
    assert track.faces_per_frame == [1, 1, 1, 1, 0, 0, 1, 2, 2, 2, 2, 2]
    assert np.nanmin(track.similarities) > 0.9  # always the person, never the stranger
    jaw = BLENDSHAPE_INDEX["jawOpen"]
    read = track.raw["blendshapes"][:, jaw]
    assert np.allclose(read[[0, 1, 2, 3, 6, 7]], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]) and np.isnan(read[4:6]).all()
    assert track.frames == [0, 2, 4, 6, 8, 10] and track.expression.labels[2] == "frame 4"
    assert track.expression.blendshapes.shape == (6, 52) and track.expression.head_pose.shape == (6, 3)
    assert track.expression.landmarks.shape == (6, 478, 3)
    report = track.report()
    assert "10 of 12 frame(s) have the person" in report and "frames 4-5 (2 frame(s), 0.08 s)" in report
    assert "5 frame(s) show more than one face; the person was picked by identity" in report


def test_a_gap_longer_than_allowed_stops_with_the_frames_named(analyzer):
    estimator = ExpressionEstimator(MarkerLandmarker(), "marker")
    with pytest.raises(GenAffectInputError, match="missing for 2 frames in a row"):
        track_expressions(analyzer, estimator, video(), RATE, max_gap_seconds=0.05)


def test_the_track_node_gives_the_expressions_the_frame_rate_of_the_kept_frames_a_chart_and_a_report(analyzer):
    estimator = ExpressionEstimator(MarkerLandmarker(jaw_scores(10)), "marker")
    expression, fps, chart, report = GenAffectExpressionTrack().track(
        to_image_tensor(*video()), RATE, analyzer, estimator, 2.0, 0.0, True, 3, 1.0)
    assert len(expression) == 4 and fps == pytest.approx(RATE / 3)
    assert chart.shape[0] == 1 and chart.shape[-1] == 3 and "jitter of blendshapes" in report
