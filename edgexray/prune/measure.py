"""Size and speed of a model: parameters, MACs, serialized bytes, CPU latency."""
from __future__ import annotations

import io
import statistics
import time

import torch
import torch_pruning as tp
from torch import nn


def count(model: nn.Module, example_input: torch.Tensor) -> dict:
    """{"params", "macs"} for one forward pass of `example_input` (batch 1)."""
    was_training = model.training
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model.eval(), example_input[:1])
    model.train(was_training)
    return {"params": int(params), "macs": int(macs)}


def state_dict_bytes(model: nn.Module) -> int:
    """Size of the serialized weights (what a checkpoint file mostly is)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def cpu_latency_ms(model: nn.Module, example_input: torch.Tensor, runs: int = 30, warmup: int = 5,
                   threads: int | None = None) -> dict:
    """Batch-1 latency in PyTorch on the CPU after warm-up: p50/p90/mean/min in ms (min is the
    steadiest figure on a machine shared with other work)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    x = example_input[:1].cpu()
    model = model.eval().cpu()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                model(x)
                times.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        torch.set_num_threads(old)
    times.sort()
    return {"p50": statistics.median(times), "p90": times[int(0.9 * (len(times) - 1))],
            "mean": statistics.fmean(times), "min": times[0], "runs": runs, "threads": threads or old}
