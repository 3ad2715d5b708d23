"""Bootstrap intervals and the paired budget check (edgexray.runtime.metrics), numpy only."""

from __future__ import annotations

import numpy as np
import pytest

from edgexray.runtime.metrics import (
    _weighted_auc,
    bootstrap_intervals,
    budget_check,
    classification_metrics,
    paired_drop,
    roc_auc_binary,
)


def _probs(pred, k):
    p = np.full((len(pred), k), 0.1 / max(k - 1, 1))
    p[np.arange(len(pred)), pred] = 0.9
    return p


def test_weighted_auc_with_unit_weights_is_the_plain_auc_ties_included():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(bool)
    score = np.round(rng.random(300) + 0.5 * y, 1)  # many ties
    w = np.ones((2, 300), np.int32)
    np.testing.assert_allclose(_weighted_auc(w, y, score), roc_auc_binary(y, score), rtol=1e-12)
    w2 = np.ones((1, 300), np.int32)
    w2[0, :10] = 3  # a weight of 3 is the image repeated three times
    rep = np.r_[np.arange(300), np.repeat(np.arange(10), 2)]
    np.testing.assert_allclose(_weighted_auc(w2, y, score)[0], roc_auc_binary(y[rep], score[rep]))


def test_accuracy_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    true_acc, n, runs, hits = 0.8, 200, 200, 0
    for r in range(runs):
        y = rng.integers(0, 2, n)
        right = rng.random(n) < true_acc
        pred = np.where(right, y, 1 - y)
        lo, hi = bootstrap_intervals(y, _probs(pred, 2), ["a", "b"], resamples=400, seed=r)["accuracy"]
        hits += lo <= true_acc <= hi
    assert 0.88 <= hits / runs <= 0.99, hits / runs  # nominal 0.95 (binomial sd 0.015)


def test_intervals_are_seeded_and_the_point_estimate_lies_inside():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 240)
    probs = rng.dirichlet(np.ones(3), 240) + np.eye(3)[y] * 0.5
    a = classification_metrics(y, probs, ["x", "y", "z"], intervals=True, seed=5)
    b = classification_metrics(y, probs, ["x", "y", "z"], intervals=True, seed=5)
    assert a["ci95"] == b["ci95"]
    lo, hi = a["ci95"]["accuracy"]
    assert lo < a["accuracy"] < hi and hi - lo < 0.2
    for name, c in a["per_class"].items():
        s_lo, s_hi = a["ci95"]["per_class"][name]["sensitivity"]
        assert s_lo <= c["sensitivity"] <= s_hi
        a_lo, a_hi = a["ci95"]["per_class"][name]["roc_auc"]
        assert a_lo <= c["roc_auc"] <= a_hi


def test_grouped_bootstrap_is_wider_when_a_patients_images_agree():
    # 40 patients x 10 images; a patient's images are all right or all wrong, so the data hold
    # 40 independent observations, not 400: the grouped interval is ~sqrt(10) times wider
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(40), 10)
    y = rng.integers(0, 2, 400)
    right = np.repeat(rng.random(40) < 0.75, 10)
    pred = np.where(right, y, 1 - y)
    by_image = bootstrap_intervals(y, _probs(pred, 2), ["a", "b"])
    by_patient = bootstrap_intervals(y, _probs(pred, 2), ["a", "b"], groups=patients)
    w_img = np.diff(by_image["accuracy"])[0]
    w_pat = np.diff(by_patient["accuracy"])[0]
    assert by_patient["unit"] == "group" and by_patient["n_units"] == 40
    assert 2.0 < w_pat / w_img < 4.5, (w_img, w_pat)


def test_identical_models_have_no_drop_and_pass_any_budget():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 50)
    pred = rng.integers(0, 2, 50)
    r = budget_check(y, pred, pred, ["a", "b"], 0.0)
    assert r["passed"] and r["accuracy_drop_interval_pp"] == [0.0, 0.0] and not r["too_small"]


def test_paired_interval_is_narrower_than_the_unpaired_difference():
    # two models that agree on most images: pairing cancels what they share
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 500)
    ref = np.where(rng.random(500) < 0.85, y, 1 - y)
    cand = ref.copy()
    flip = rng.choice(500, 10, replace=False)
    cand[flip] = 1 - cand[flip]
    d = paired_drop(y, ref, cand, ["a", "b"])
    lo, hi = d["accuracy_drop_interval_pp"]
    assert lo <= d["accuracy_drop_pp"] <= hi
    single = bootstrap_intervals(y, _probs(ref, 2), ["a", "b"])["accuracy"]
    assert hi - lo < 0.5 * 100 * (single[1] - single[0])


def test_upper_bound_not_the_point_drop_decides():
    # 2,000 images; the candidate is wrong on 30 more and right on 20 more: point drop 0.5 pp,
    # but the upper bound is above a 0.6 pp budget
    y = np.zeros(2000, int)
    y[:1000] = 1
    ref = y.copy()
    cand = y.copy()
    cand[:30] = 1 - cand[:30]
    ref[1000:1020] = 1 - ref[1000:1020]
    r = budget_check(y, ref, cand, ["a", "b"], 0.6)
    assert r["accuracy_drop_pp"] == pytest.approx(0.5)
    assert not r["passed"] and "upper 95% bound" in r["failures"][0]
    assert budget_check(y, ref, cand, ["a", "b"], 3.0)["passed"]


def test_minority_class_collapse_is_refused_although_accuracy_barely_moves():
    # 950 majority, 50 minority images; the candidate gets 25 more majority images right and
    # 25 fewer minority images: accuracy unchanged, minority sensitivity 90% -> 40%
    y = np.r_[np.zeros(950, int), np.ones(50, int)]
    ref = y.copy()
    ref[:50] = 1  # 50 majority images wrong
    ref[950:955] = 0  # 5 minority images wrong
    cand = ref.copy()
    cand[:25] = 0  # 25 of those majority images now right
    cand[955:980] = 0  # 25 more minority images wrong
    r = budget_check(y, ref, cand, ["common", "rare"], 1.0)
    assert abs(r["accuracy_drop_pp"]) < 1e-9  # accuracy alone would pass
    assert r["per_class"]["rare"]["sensitivity_drop_pp"] == pytest.approx(50.0)
    assert not r["passed"] and any("rare sensitivity" in f for f in r["failures"])


def test_a_small_split_says_the_budget_cannot_be_resolved():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 60)
    ref = y.copy()
    cand = y.copy()
    cand[:3] = 1 - cand[:3]
    ref[3:5] = 1 - ref[3:5]
    r = budget_check(y, ref, cand, ["a", "b"], 1.0)
    assert r["too_small"] and "too small" in r["note"] and not r["passed"]


def test_given_labels_drive_the_label_figures_and_aucs_stay_on_probabilities():
    from edgexray.runtime.metrics import ARGMAX_RULE, threshold_labels, threshold_rule
    from edgexray.runtime.run_py import _label_index

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet(np.ones(3), 200) * 0.5 + 0.5 * np.eye(3)[y]
    names = ["a", "b", "c"]
    labels = threshold_labels(probs, 1, 0.2)  # run.py's rule: b when p_b >= 0.2, else argmax of a, c
    assert labels.tolist() == [_label_index(p, (1, 0.2)) for p in probs]
    assert (labels != probs.argmax(1)).any()
    plain = classification_metrics(y, probs, names, intervals=True, seed=1)
    at = classification_metrics(
        y, probs, names, intervals=True, seed=1, y_pred=labels, decision_rule=threshold_rule("b", 0.2)
    )
    assert plain["decision_rule"] == ARGMAX_RULE and at["decision_rule"].startswith("operating point: b when")
    assert at["accuracy"] == pytest.approx(np.mean(labels == y)) != plain["accuracy"]
    assert at["per_class"]["b"]["sensitivity"] == pytest.approx(np.mean(labels[y == 1] == 1))
    assert at["per_class"]["b"]["specificity"] == pytest.approx(np.mean(labels[y != 1] != 1))
    assert at["roc_auc"] == plain["roc_auc"] and at["ci95"]["roc_auc"] == plain["ci95"]["roc_auc"]
    lo, hi = at["ci95"]["per_class"]["b"]["sensitivity"]
    assert (
        lo <= at["per_class"]["b"]["sensitivity"] <= hi
        and at["ci95"]["accuracy"] != plain["ci95"]["accuracy"]
    )
