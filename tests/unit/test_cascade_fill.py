"""Ensembles, cascade routing, the 8-class probability vector, and gap filling on hand-built tables."""

import numpy as np
import pytest

from fer_ray import labels
from fer_ray.infer import cascade
from fer_ray.infer.fill import NEUTRAL, expand, fill_gaps, nearest_face_frame

NEG = labels.COARSE_NEGATIVE


def test_softmax_stable_and_normalized():
    probs = cascade.softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    np.testing.assert_allclose(probs, [[0.5, 0.5], [0.25, 0.75]])


def test_ensemble_sums_probabilities_with_weights():
    a = np.array([[0.7, 0.3]])
    b = np.array([[0.1, 0.9]])
    np.testing.assert_allclose(cascade.ensemble_probs([a, b]), [[0.8, 1.2]])
    np.testing.assert_allclose(cascade.ensemble_probs([a, b], [3.0, 1.0]), [[2.2, 1.8]])
    with pytest.raises(ValueError):
        cascade.ensemble_probs([a, b], [1.0])


def test_weighted_ensemble_mao():
    scores = {"gru": np.array([[0.6, 0.4]]), "transformer": np.array([[0.2, 0.8]])}
    out = cascade.weighted_ensemble(scores, {"gru": 0.75, "transformer": 0.25})
    np.testing.assert_allclose(out, [[0.5, 0.5]])
    with pytest.raises(ValueError):
        cascade.weighted_ensemble(scores, {"gru": 1.0})


def test_route_hand_built():
    coarse = np.array([
        [0.9, 0.0, 0.0, 0.0, 0.1],   # Neutral
        [0.0, 0.8, 0.1, 0.0, 0.1],   # Happiness
        [0.0, 0.1, 0.8, 0.0, 0.1],   # Surprise
        [0.1, 0.0, 0.0, 0.8, 0.1],   # Other
        [0.3, 0.0, 0.0, 0.0, 0.7],   # Negative -> negative net
        [0.3, 0.0, 0.0, 0.0, 0.7],   # Negative -> negative net
    ])
    negative = np.array([[0.7, 0.1, 0.1, 0.1]] * 5 + [[0.1, 0.1, 0.1, 0.7]])
    got = cascade.route(coarse, negative)
    names = [labels.ABAW_CLASSES[i] for i in got]
    assert names == ["Neutral", "Happiness", "Surprise", "Other", "Anger", "Sadness"]
    # the negative net is ignored where the coarse net is not Negative
    assert cascade.route(coarse[:4], negative[::-1][:4]).tolist() == got[:4].tolist()


def test_abaw_probs_hand_built():
    coarse = np.array([[0.2, 0.1, 0.1, 0.1, 0.5], [2.0, 0.0, 0.0, 0.0, 0.0]])  # 2nd row: unnormalized
    negative = np.array([[0.5, 0.25, 0.25, 0.0], [1.0, 1.0, 1.0, 1.0]])
    probs = cascade.abaw_probs(coarse, negative)
    expected = np.zeros((2, 8))
    expected[0] = [0.2, 0.25, 0.125, 0.125, 0.1, 0.0, 0.1, 0.1]
    expected[1, 0] = 1.0
    np.testing.assert_allclose(probs, expected)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    with pytest.raises(ValueError):
        cascade.abaw_probs(-coarse, negative)


def test_routed_label_can_differ_from_argmax_of_probs():
    coarse = np.array([[0.4, 0.0, 0.0, 0.0, 0.6]])
    negative = np.array([[0.25, 0.25, 0.25, 0.25]])
    assert cascade.route(coarse, negative)[0] == labels.ABAW_OF_NEGATIVE[0]
    assert cascade.abaw_probs(coarse, negative).argmax() == 0


def test_model_names():
    assert cascade.model_name("coarse", "swin") == "coarse/swin"
    assert cascade.split_model_name("negative/repvgg") == ("negative", "repvgg")
    for bad in ("swin", "fine/swin", "coarse/", "coarse"):
        with pytest.raises(ValueError):
            cascade.split_model_name(bad)


# ---- gap filling ----

def _fill(pattern):
    """pattern: a string, digits = face frame with that label, '.' = no face."""
    face = np.array([c != "." for c in pattern])
    values = np.array([int(c) if c != "." else 9 for c in pattern])
    out, filled = fill_gaps(values, face)
    assert filled.tolist() == (~face).tolist()
    return "".join(map(str, out))


def test_leading_gap_takes_next():
    assert _fill("...3") == "3333"


def test_trailing_gap_takes_previous():
    assert _fill("25..") == "2555"


def test_inner_even_gap_split_in_half():
    assert _fill("1....2") == "111222"


def test_inner_odd_gap_middle_takes_previous():
    assert _fill("1...2") == "11122"
    assert _fill("1.2") == "112"


def test_mixed_gaps():
    assert _fill("..4.5...6..") == "44445556666"


def test_all_missing_is_neutral_and_flagged():
    values = np.array([5, 5, 5])
    out, filled = fill_gaps(values, np.zeros(3, dtype=bool))
    assert out.tolist() == [NEUTRAL] * 3 and filled.all()
    probs, filled = fill_gaps(np.full((2, 8), 0.5), np.zeros(2, dtype=bool))
    assert probs[:, NEUTRAL].tolist() == [1.0, 1.0] and probs.sum() == 2.0 and filled.all()
    assert nearest_face_frame(np.zeros(3, dtype=bool)).tolist() == [-1, -1, -1]


def test_fill_probability_rows():
    probs = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    out, _ = fill_gaps(probs, np.array([True, False, False, True]))
    np.testing.assert_array_equal(out, [[1, 0], [1, 0], [0, 1], [0, 1]])


def test_expand_scatters_and_drops_out_of_range():
    values, found = expand(np.array([4, 1, 9]), np.array([7, 6, 5]), 6)
    assert values.tolist() == [0, 6, 0, 0, 7, 0]
    assert found.tolist() == [False, True, False, False, True, False]


def test_decision_text_says_what_the_cascade_decided():
    from fer_ray.infer.cascade import abaw_probs, decision_text

    coarse = np.array([0.25, 0.2, 0.15, 0.1, 0.30])  # Negative wins the coarse step with 0.30
    negative = np.array([0.05, 0.83, 0.07, 0.05])  # then Disgust within Negative
    probs = abaw_probs(coarse[None], negative[None])[0]
    disgust = labels.class_index("Disgust")
    assert probs[disgust] < probs[labels.class_index("Neutral")]  # the joint bar looks like a loss...
    assert decision_text(disgust, probs, coarse, negative) == "Negative 0.30 -> Disgust 0.83"  # ...it won
    neutral = labels.class_index("Neutral")
    assert decision_text(neutral, probs, coarse * 2, negative) == "Neutral 0.25"  # coarse scores normalised
    happy = np.eye(labels.NUM_CLASSES)[labels.class_index("Happiness")] * 0.9 + 0.0125
    assert decision_text(labels.class_index("Happiness"), happy) == "Happiness 0.91"  # one model: its prob
    assert decision_text(labels.class_index("Happiness"), happy, [], []) == "Happiness 0.91"  # empty lists
