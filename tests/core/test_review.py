from edgexray.review import models2warnings


def _row(cm, per_class, acc_ci=(0.8, 0.9), external=None):
    names = list(per_class)
    ci = {
        "accuracy": list(acc_ci),
        "per_class": {c: {"sensitivity": [0.7, 1.0], "specificity": [0.7, 1.0]} for c in names},
    }
    row = {
        "label": "m",
        "metrics": {
            "accuracy": 0.85,
            "confusion_matrix": cm,
            "class_names": names,
            "per_class": per_class,
            "ci95": ci,
        },
    }
    if external is not None:
        row["external"] = external
    return row


GOOD = {"A": {"sensitivity": 0.9, "specificity": 0.8}, "B": {"sensitivity": 0.8, "specificity": 0.9}}


def test_a_healthy_model_has_no_warning():
    assert models2warnings([_row([[45, 5], [10, 40]], GOOD)]) == []
    assert models2warnings([{"label": "tasks row without metrics"}]) == []


def test_one_class_and_low_rates_are_warned():
    low = {"A": {"sensitivity": 1.0, "specificity": 0.02}, "B": {"sensitivity": 0.02, "specificity": 1.0}}
    w = models2warnings([_row([[50, 0], [49, 1]], low)])
    assert any("predicts A for 99.0%" in x for x in w)
    assert any("A specificity 2.0%" in x for x in w) and any("B sensitivity 2.0%" in x for x in w)
    assert not any("A sensitivity" in x for x in w)
    row = _row([[50, 0], [49, 1]], low)
    del row["metrics"]["class_names"]  # parity rows: the names are per_class's keys
    assert any("predicts A for 99.0%" in x for x in models2warnings([row]))


def test_internal_and_external_disagreeing_beyond_intervals_is_warned():
    ext = {
        "accuracy": 0.6,
        "accuracy_ci95": [0.55, 0.65],
        "per_class": GOOD,
        "per_class_ci95": {c: {"sensitivity": [0.75, 0.95], "specificity": [0.75, 0.95]} for c in GOOD},
    }
    w = models2warnings([_row([[45, 5], [10, 40]], GOOD, external=ext)])
    assert len(w) == 1 and "accuracy 85.0% internal vs 60.0% external" in w[0]
    overlapping = {**ext, "accuracy_ci95": [0.7, 0.82]}
    assert models2warnings([_row([[45, 5], [10, 40]], GOOD, external=overlapping)]) == []
