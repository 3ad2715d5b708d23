"""Markdown for prune, sensitivity and comparison reports (the JSON holds everything)."""

from __future__ import annotations


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _acc(m) -> str:
    return "n/a" if not m else f"{100 * m['accuracy']:.2f}%"


def _mb(n) -> str:
    return f"{n / 1e6:.3f} MB"


def unstructured_markdown(rep: dict) -> str:
    b, a = rep["measured"]["before"], rep["measured"]["after"]
    acc = rep.get("accuracy") or {}
    files = rep.get("files", {})
    nz = rep["nonzero_weights"]
    threads = b["latency_ms"]["threads"]
    lines = [
        f"# Pruning report: {rep['arch']} with {rep['method']}",
        "",
        f"Criterion: {rep['criterion']}. Schedule: {rep['schedule']}, {rep['config']['ratio']:.0%} "
        f"of the remaining weights zeroed per round, {rep['config']['finetune_epochs']} fine-tune "
        f"epoch(s) per round; masks made permanent. Sparsity reached: {_pct(rep['sparsity'])} of "
        "the conv and linear weights are zero.",
        "",
        f"Note: {rep['note']}.",
        "",
        "| | before | after | change |",
        "|---|---:|---:|---:|",
        f"| non-zero weights | {nz['before']:,} | {nz['after']:,} | "
        f"-{_pct(rep['reduction']['nonzero_weights'])} |",
        f"| parameters (dense) | {b['params']:,} | {a['params']:,} | unchanged |",
        f"| MACs (dense) | {b['macs']:,} | {a['macs']:,} | unchanged |",
        f"| weights as stored | {_mb(rep['before']['stored_bytes'])} | {_mb(rep['after']['stored_bytes'])} | |",
        f"| weights zipped | {_mb(rep['before']['zipped_bytes'])} | {_mb(rep['after']['zipped_bytes'])} | "
        f"-{_pct(rep['reduction']['zipped_bytes'])} |",
    ]
    if files:
        lines += [
            f"| checkpoint file as stored | {_mb(files['before_bytes'])} | {_mb(files['after_bytes'])} | |",
            f"| checkpoint file zipped | {_mb(files['before_zipped_bytes'])} | "
            f"{_mb(files['after_zipped_bytes'])} | |",
        ]
    lines += [
        f"| CPU latency p50 (PyTorch, batch 1, {threads} threads) | {b['latency_ms']['p50']:.2f} ms | "
        f"{a['latency_ms']['p50']:.2f} ms | {b['latency_ms']['p50'] / max(a['latency_ms']['p50'], 1e-9):.2f}x "
        "(dense: no speed-up expected) |",
        f"| val accuracy | {_acc(acc.get('val_before'))} | pruned {_acc(acc.get('val_pruned'))}, "
        f"fine-tuned {_acc(acc.get('val_finetuned'))} | |",
        f"| test accuracy | {_acc(acc.get('test_before'))} | {_acc(acc.get('test_after'))} | |",
        "",
        "## Rounds",
        "",
        "| round | sparsity | fine-tuned |",
        "|---:|---:|---|",
    ]
    lines += [
        f"| {r['round']} | {_pct(r['sparsity'])} | {'yes' if r['finetuned'] else 'no'} |"
        for r in rep["rounds"]
    ]
    lines += ["", "## Zero fraction per layer", "", "| layer | zeros |", "|---|---:|"]
    lines += [f"| {n} | {_pct(f)} |" for n, f in rep["layers_zero_fraction"].items()]
    return "\n".join(lines) + "\n"


def prune_markdown(rep: dict) -> str:
    if rep["method"] == "l1-unstructured":
        return unstructured_markdown(rep)
    b, a = rep["measured"]["before"], rep["measured"]["after"]
    acc = rep.get("accuracy") or {}
    files = rep.get("files", {})
    lines = [
        f"# Pruning report: {rep['arch']} with {rep['method']}",
        "",
        f"Criterion: {rep['criterion']}. Schedule: {rep['schedule']}"
        + (
            f", target {rep['target']['kind']} -{_pct(rep['target']['requested'])} "
            f"(reached -{_pct(rep['target']['reached'])})"
            if rep.get("target")
            else ""
        )
        + f"; stage ratios applied {[round(r, 3) for r in rep['stage_ratios_applied']]}; "
        f"{rep['config']['steps']} step(s), {rep['config']['finetune_epochs']} fine-tune epoch(s) "
        f"per step; channels rounded to multiples of {rep['config']['round_to']}."
        + (
            f" Stage ratios seeded by a per-layer sensitivity run ({seed['file']}): the largest "
            f"tested ratio every layer of the stage tolerates alone within a "
            f"{_pct(seed['max_drop'])} val accuracy drop."
            if (seed := rep.get("sensitivity_seed"))
            else ""
        ),
        "",
        "| | before | after | change |",
        "|---|---:|---:|---:|",
        f"| parameters | {b['params']:,} | {a['params']:,} | -{_pct(rep['reduction']['params'])} |",
        f"| MACs | {b['macs']:,} | {a['macs']:,} | -{_pct(rep['reduction']['macs'])} |",
        f"| weights (state dict) | {_mb(b['state_dict_bytes'])} | {_mb(a['state_dict_bytes'])} | |",
    ]
    if files:
        lines.append(f"| checkpoint file | {_mb(files['before_bytes'])} | {_mb(files['after_bytes'])} | |")
    lines += [
        f"| CPU latency p50 (PyTorch, batch 1, {b['latency_ms']['threads']} threads) | "
        f"{b['latency_ms']['p50']:.2f} ms | {a['latency_ms']['p50']:.2f} ms | "
        f"{b['latency_ms']['p50'] / max(a['latency_ms']['p50'], 1e-9):.2f}x faster |",
        f"| val accuracy | {_acc(acc.get('val_before'))} | pruned {_acc(acc.get('val_pruned'))}, "
        f"fine-tuned {_acc(acc.get('val_finetuned'))} | |",
        f"| test accuracy | {_acc(acc.get('test_before'))} | {_acc(acc.get('test_after'))} | |",
        "",
        "## Spine (stage output) widths",
        "",
        "| stage | before | after |",
        "|---|---:|---:|",
    ]
    sb, sa = rep["spine_widths"]["before"], rep["spine_widths"]["after"]
    lines += [f"| {k} | {sb[k]} | {sa.get(k)} |" for k in sb]
    lines += [
        "",
        "## Channel groups (coupled channels pruned together)",
        "",
        "| group (root layer) | stage | ratio | channels | scored by | layers |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for g in rep["groups"]:
        lines.append(
            f"| {g['name']} | {g['stage']} | {g['ratio']:.2f} | {g['channels_before']} -> "
            f"{g['channels_after']} | {g['scoring']} | {len(g['members'])} |"
        )
    lines += ["", "## Channels kept per layer", "", "| layer | before | after |", "|---|---:|---:|"]
    lines += [f"| {n} | {w[0]} | {w[1]} |" for n, w in rep["layers"].items()]
    return "\n".join(lines) + "\n"


def sensitivity_markdown(rep: dict) -> str:
    ratios = rep["ratios"]
    lines = [
        f"# Pruning sensitivity: {rep['arch']} ({rep['method']}, no fine-tuning)",
        "",
        f"Validation accuracy when only one stage is pruned by the ratio; unpruned: {_acc(rep['baseline'])}.",
        "",
        "| stage | " + " | ".join(f"{r:.0%}" for r in ratios) + " |",
        "|---|" + "---:|" * len(ratios),
    ]
    for stage, rows in rep["stages"].items():
        lines.append(
            f"| {stage} | "
            + " | ".join(f"{_acc(r['val'])} (-{_pct(r['macs_reduction'])} MACs)" for r in rows)
            + " |"
        )
    return "\n".join(lines) + "\n"


def layer_sensitivity_markdown(rep: dict) -> str:
    ratios = rep["ratios"]
    lines = [
        f"# Per-layer pruning sensitivity: {rep['arch']} ({rep['method']}, no fine-tuning)",
        "",
        "Validation accuracy when only one channel group (a layer and the layers coupled to "
        f"it) is pruned by the ratio; unpruned: {_acc(rep['baseline'])}.",
        "",
        "| group (root layer) | stage | channels | " + " | ".join(f"{r:.0%}" for r in ratios) + " |",
        "|---|---:|---:|" + "---:|" * len(ratios),
    ]
    for name, g in rep["groups"].items():
        lines.append(
            f"| {name} | {g['stage']} | {g['channels']} | "
            + " | ".join(f"{_acc(r['val'])} (-{_pct(r['macs_reduction'])} MACs)" for r in g["rows"])
            + " |"
        )
    if rep.get("seeded_stage_ratios") is not None:
        lines += [
            "",
            f"Progressive schedule seeded from it (largest ratio every group of a stage "
            f"tolerates with at most {_pct(rep['max_drop'])} accuracy drop): stage ratios "
            f"{list(rep['seeded_stage_ratios'])}.",
        ]
    return "\n".join(lines) + "\n"


def compare_markdown(rep: dict) -> str:
    lines = [
        f"# Pruning methods compared: {rep['arch']}",
        "",
        f"Same schedule and target for every method: {rep['schedule']}; "
        f"{rep['finetune_epochs']} fine-tune epoch(s).",
        "",
        "| method | params | non-zero weights | MACs | zipped weights | latency p50 | "
        "val acc (pruned) | val acc (fine-tuned) | test acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rep["rows"]:
        if r.get("error"):
            lines.append(f"| {r['method']} | error: {r['error']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['params']:,} | {r['nonzero_weights']:,} | {r['macs']:,} | "
            f"{_mb(r['zipped_bytes'])} | "
            f"{r['latency_ms']['p50']:.2f} ms | {_acc(r['val_pruned'])} | "
            f"{_acc(r['val_finetuned'])} | {_acc(r['test'])} |"
        )
    if any(r["method"] == "l1-unstructured" for r in rep["rows"]):
        lines += [
            "",
            "l1-unstructured keeps every layer's shape: its parameters and MACs are those of "
            "the unpruned model and dense runtimes do not run it faster; it saves non-zero "
            "weights and compressed file size only.",
        ]
    return "\n".join(lines) + "\n"
