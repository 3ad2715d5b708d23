"""Pruning criteria: which channels of a coupled group to remove.

Every criterion is a torch-pruning `Importance` (one `__call__(group) -> score per channel`), so any
torch-pruning pruner can use it. `prepare(model, batches, DG, example_input)` runs first on the
current model (gate statistics, gradients, SynFlow scores); `scoring[group_root_name]` records how each group's
channels were scored. Registry: `get_importance(name)`, `list_importances()`.

cbam / se (attention importance): importance of channel c = mean over the calibration images of
the channel-attention gate value (the sigmoid output) of the gate that multiplies channel c.
Channels coupled by a residual sum or a concatenation form one group; every gate in the group is
normalized by its mean and the gates are averaged per channel. Fallback for channels that no gate
multiplies (a block's inner conv, a depthwise expansion): the attention-weighted magnitude of the
consuming layers, sum_o gate_o * |W[o, c]|, where gate_o is the gate on the consumer's output (1
when it has none, which is plain L1 of the consuming weights).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function

from edgexray.models.attention import ChannelGate, SEGate
from edgexray.prune.graph import OUT_FNS
from edgexray.runtime.errors import EdgeXrayError, unknown_name

log = logging.getLogger(__name__)

IN_FNS = (function.prune_conv_in_channels, function.prune_linear_in_channels)


class Criterion(tp.importance.Importance):
    """Base: `prepare` on the current model, then `__call__(group)` per group."""

    name = ""
    needs_data = False  # True: calibration images are required
    description = ""

    def check(self, model: nn.Module) -> None:
        """Raise EdgeXrayError when the criterion cannot score this model."""

    def prepare(
        self, model: nn.Module, batches: list, DG: tp.DependencyGraph, example_input: torch.Tensor
    ) -> None:
        self.check(model)
        self.names = {m: n for n, m in model.named_modules()}
        self.scoring: dict[str, str] = {}

    def _record(self, group, how: str) -> None:
        self.scoring[self.names.get(group[0].dep.target.module, "?")] = how


def _scatter_mean(n: int, parts: Iterable[tuple[torch.Tensor, list]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum per-member scores onto the group's root channels; return (mean, count) per channel."""
    total, count = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for score, root_idxs in parts:
        if any(r is None for r in root_idxs):
            continue
        idx = torch.as_tensor(root_idxs, dtype=torch.long)
        total.index_add_(0, idx, score.detach().double().cpu())
        count.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
    return total / count.clamp(min=1), count


def _normalized(v: torch.Tensor) -> torch.Tensor:
    return v / v.mean().clamp(min=1e-12)


class AttentionImportance(Criterion):
    """CBAM (`ChannelGate`) or SE (`SEGate`) gate values averaged over calibration images."""

    needs_data = True

    def __init__(self, gate_type: type, name: str):
        self.gate_type, self.name = gate_type, name
        self.description = f"mean {name.upper()} channel-attention gate over calibration images"

    def check(self, model):
        if not any(isinstance(m, self.gate_type) for m in model.modules()):
            other = {ChannelGate: "se", SEGate: "cbam"}[self.gate_type]
            has_other = any(isinstance(m, (ChannelGate, SEGate)) for m in model.modules())
            fix = (
                f"use --method {other} for this model"
                if has_other
                else f"use --method l1 (or taylor, bnscale), or train an _{self.name} architecture "
                f"(e.g. resnet18_{self.name})"
            )
            raise EdgeXrayError(
                f"--method {self.name} needs {self.name.upper()} attention gates, "
                f"but the model has none; {fix}"
            )

    def prepare(self, model, batches, DG, example_input):
        super().prepare(model, batches, DG, example_input)
        gates = [m for m in model.modules() if isinstance(m, self.gate_type)]
        sums: dict[nn.Module, torch.Tensor] = {}
        count = [0]

        def hook(gate):
            def fn(mod, inp, out):
                s = out.detach().double().sum(dim=(0, 2, 3))
                sums[gate] = sums[gate] + s if gate in sums else s

            return fn

        handles = [g.sigmoid.register_forward_hook(hook(g)) for g in gates]
        try:
            model.eval()
            with torch.no_grad():
                for x, _ in batches:
                    model(x)
                    count[0] += len(x)
        finally:
            for h in handles:
                h.remove()
        # key: the gate's output conv, which sits in the group of the channels it gates
        self.gate_mean = {
            (g.mlp[2] if isinstance(g, ChannelGate) else g.fc[2]): sums[g] / count[0]
            for g in gates
            if g in sums
        }
        self.DG, self._consumer_gate = DG, {}

    def gate_on_output(self, layer: nn.Module) -> torch.Tensor | None:
        """Gate value of each output channel of `layer` (via its own group), or None."""
        if layer in self._consumer_gate:
            return self._consumer_gate[layer]
        vec = None
        if isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer in self.DG.module2node:
            group = self.DG.get_pruning_group(
                layer, function.prune_conv_out_channels, list(range(layer.out_channels))
            )
            parts = self._gate_parts(group)
            if parts:
                mean, count = _scatter_mean(layer.out_channels, parts)
                vec = torch.where(count > 0, mean, torch.ones_like(mean))
        self._consumer_gate[layer] = vec
        return vec

    def _gate_parts(self, group) -> list:
        """(gate values normalized by their mean, root channels) of every gate in the group."""
        return [
            (_normalized(self.gate_mean[d.target.module][idxs]), group[i].root_idxs)
            for i, (d, idxs) in enumerate(group)
            if d.handler in OUT_FNS and d.target.module in self.gate_mean
        ]

    @torch.no_grad()
    def __call__(self, group):
        n = len(group[0].idxs)
        gate_parts = self._gate_parts(group)
        gated, count = _scatter_mean(n, gate_parts)
        n_gates = len(gate_parts)
        if bool((count > 0).all()):
            self._record(group, f"{self.name}-gate ({n_gates} gates)")
            return gated.float()
        parts, weighted = [], False
        for i, (d, idxs) in enumerate(group):
            layer = d.target.module
            if d.handler not in IN_FNS or (isinstance(layer, nn.Conv2d) and layer.groups != 1):
                continue
            w = layer.weight.detach().abs()
            w = w.sum(dim=(2, 3)) if w.ndim == 4 else w  # (out, in)
            g = self.gate_on_output(layer)
            weighted |= g is not None
            g = torch.ones(w.shape[0], dtype=torch.float64) if g is None else g
            parts.append(((w.double() * g[:, None]).sum(0)[idxs], group[i].root_idxs))
        fallback, fcount = _scatter_mean(n, parts)
        if not bool((fcount > 0).any()):  # nothing consumes these channels through a weight
            self._record(group, "l1-fallback (no gate, no consumer)")
            return tp.importance.MagnitudeImportance(p=1)(group)
        how = (
            "attention-weighted consumer magnitude"
            if weighted
            else "consumer L1 (no gate reaches these channels)"
        )
        if bool((count > 0).any()):
            how = f"{self.name}-gate ({n_gates} gates) + {how} for ungated channels"
            fallback = torch.where(count > 0, gated, _normalized(fallback))
        self._record(group, how)
        return fallback.float()


class TorchPruningCriterion(Criterion):
    """A torch-pruning importance used as is (L1, Taylor, BN scale, random)."""

    def __init__(
        self,
        name: str,
        inner: tp.importance.Importance,
        description: str,
        needs_data: bool = False,
        seed: int = 0,
    ):
        self.name, self.inner, self.description = name, inner, description
        self.needs_data, self.seed = needs_data, seed

    def prepare(self, model, batches, DG, example_input):
        super().prepare(model, batches, DG, example_input)
        if self.name == "random":
            torch.manual_seed(self.seed)
        if self.name == "taylor":  # first-order Taylor needs the loss gradient of every weight
            model.eval()
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                for x, y in batches:
                    nn.functional.cross_entropy(model(x), y, reduction="sum").backward()

    def __call__(self, group):
        self._record(group, self.name)
        imp = self.inner(group)
        if imp is None:  # a group without weights torch-pruning can score
            self._record(group, f"random ({self.name} found no weights)")
            return torch.rand(len(group[0].idxs))
        return imp


class SynFlowImportance(Criterion):
    """SynFlow (Tanaka et al., 2020), data-free: |theta * dR/dtheta| with R = sum of the outputs of
    the |theta| network on an all-ones input; a channel's score sums the scores of the weights
    that belong to it across the group (structured SynFlow)."""

    name = "synflow"
    description = "structured SynFlow: summed |theta * dR/dtheta| of each channel's weights"

    def prepare(self, model, batches, DG, example_input):
        super().prepare(model, batches, DG, example_input)
        shape = example_input.shape[1:]
        net = copy.deepcopy(model).double().eval()
        for p in net.parameters():
            p.data.abs_()
            p.grad = None
        with torch.enable_grad():
            net(torch.ones((1, *shape), dtype=torch.float64)).sum().backward()
        self.score = {
            n: (p * p.grad).abs().detach()
            for n, p in net.named_parameters()
            if n.endswith(".weight") and p.grad is not None
        }

    @torch.no_grad()
    def __call__(self, group):
        parts = []
        for i, (d, idxs) in enumerate(group):
            s = self.score.get(f"{self.names.get(d.target.module)}.weight")
            if s is None:
                continue
            layer = d.target.module
            if d.handler in OUT_FNS or d.handler is function.prune_batchnorm_out_channels:
                parts.append((s[idxs].reshape(len(idxs), -1).sum(1), group[i].root_idxs))
            elif d.handler in IN_FNS and not (isinstance(layer, nn.Conv2d) and layer.groups != 1):
                parts.append((s.transpose(0, 1)[idxs].reshape(len(idxs), -1).sum(1), group[i].root_idxs))
        score, count = _scatter_mean(len(group[0].idxs), parts)
        self._record(group, "synflow")
        return score.float()


_CRITERIA: dict[str, Callable[..., Criterion]] = {
    "cbam": lambda **kw: AttentionImportance(ChannelGate, "cbam"),
    "se": lambda **kw: AttentionImportance(SEGate, "se"),
    "l1": lambda **kw: TorchPruningCriterion(
        "l1", tp.importance.MagnitudeImportance(p=1), "L1 norm of each channel's weights (group mean)"
    ),
    "taylor": lambda **kw: TorchPruningCriterion(
        "taylor",
        tp.importance.TaylorImportance(),
        "first-order Taylor |w * dL/dw| on calibration images",
        needs_data=True,
    ),
    "bnscale": lambda **kw: TorchPruningCriterion(
        "bnscale", tp.importance.BNScaleImportance(), "|BatchNorm gamma| (network slimming)"
    ),
    "random": lambda seed=0, **kw: TorchPruningCriterion(
        "random", tp.importance.RandomImportance(), "uniformly random (a baseline)", seed=seed
    ),
    "synflow": lambda **kw: SynFlowImportance(),
}


def list_importances() -> list[str]:
    return sorted(_CRITERIA)


def get_importance(name: str, **kw) -> Criterion:
    """A fresh criterion by name (cbam, se, l1, taylor, bnscale, random, synflow)."""
    if name not in _CRITERIA:  # l1-unstructured is no channel criterion (prune/unstructured.py)
        raise unknown_name("pruning method", name, [*_CRITERIA, "l1-unstructured"])
    return _CRITERIA[name](**kw)
