"""Warnings a reviewer needs (manifest/summary "warnings", the banner atop report.html):
a model that predicts (almost) one class, a class below the sensitivity/specificity floor, and
internal (test split) figures that disagree with the external test set beyond their intervals."""

from __future__ import annotations

ONE_CLASS_SHARE = 0.95  # share of the test predictions in one class
RATE_FLOOR = 0.70  # per-class sensitivity and specificity


def _disjoint(a, b) -> bool:
    """Two 95% intervals [lo, hi] that do not overlap."""
    return bool(a and b) and (a[1] < b[0] or b[1] < a[0])


def models2warnings(models: list[dict]) -> list[str]:
    """Warnings for the manifest's "models" rows: each row's test "metrics" (confusion matrix,
    per_class, ci95) and, when an external test set was given, its "external" brief."""
    out = []
    for row in models:
        label, m = row.get("label", "?"), row.get("metrics")
        if not isinstance(m, dict):
            continue
        cm = m.get("confusion_matrix")
        if cm:
            predicted = [sum(r[j] for r in cm) for j in range(len(cm))]
            total = sum(predicted)
            j = max(range(len(predicted)), key=predicted.__getitem__)
            if total and predicted[j] / total >= ONE_CLASS_SHARE:
                names = m.get("class_names") or list(m.get("per_class") or {})
                name = names[j] if j < len(names) else f"class {j}"
                out.append(
                    f"{label}: predicts {name} for "
                    f"{100 * predicted[j] / total:.1f}% of the test images (>= "
                    f"{100 * ONE_CLASS_SHARE:.0f}%): (almost) one class"
                )
        for cls, v in (m.get("per_class") or {}).items():
            for key in ("sensitivity", "specificity"):
                if v.get(key) is not None and v[key] < RATE_FLOOR:
                    out.append(
                        f"{label}: {cls} {key} {100 * v[key]:.1f}% on the test split "
                        f"(below {100 * RATE_FLOOR:.0f}%)"
                    )
        ext = row.get("external")
        if not isinstance(ext, dict) or "accuracy" not in ext:
            continue
        ci = m.get("ci95") or {}
        pairs = [
            ("accuracy", m.get("accuracy"), ci.get("accuracy"), ext.get("accuracy"), ext.get("accuracy_ci95"))
        ]
        for cls, v in (m.get("per_class") or {}).items():
            e = (ext.get("per_class") or {}).get(cls) or {}
            eci = (ext.get("per_class_ci95") or {}).get(cls) or {}
            ici = (ci.get("per_class") or {}).get(cls) or {}
            pairs += [
                (f"{cls} {k}", v.get(k), ici.get(k), e.get(k), eci.get(k))
                for k in ("sensitivity", "specificity")
            ]
        for what, a, a_ci, b, b_ci in pairs:
            if _disjoint(a_ci, b_ci):
                out.append(
                    f"{label}: {what} {100 * a:.1f}% internal vs {100 * b:.1f}% external; "
                    "their 95% intervals do not overlap (the internal figure does not "
                    "describe other patients)"
                )
    return out
