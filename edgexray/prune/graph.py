"""torch-pruning dependency graph set up for edgexray models.

What the library does not do by itself:
- CBAM's spatial gate takes a mean and a max over channels. Traced as element-wise ops they couple
  every spine channel to the gate's 1-channel map, the group fails its check and torch-pruning
  silently skips the whole residual spine. Registered as a pass-through layer it lets channels
  through, so the spine shrinks (DESIGN.md).
- The classifier's output (any group reaching the network output) and the hidden width of the
  gate MLPs (C -> C/r -> C) are never pruned; gates shrink with the channels they gate.
- ShuffleNetV2's channel shuffle (a view/transpose/view torch-pruning cannot trace) is a module
  the graph stops at; groups reaching it (the spine) are not pruned (ShuffleStopPruner).
- Each coupled group gets one stage (see `module_stages`), so a per-stage ratio never splits a
  group (torch-pruning's per-module `pruning_ratio_dict` crashed with 48 vs 64 channels).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function
from torchvision.ops import SqueezeExcitation

from edgexray.models.attention import ChannelGate, SEGate, SpatialGate
from edgexray.models.mobile import ChannelShuffle
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)

NUM_STAGES = 4  # the progressive schedule's stage count (stage 1 = highest resolution)
OUT_FNS = (
    function.prune_conv_out_channels,
    function.prune_depthwise_conv_out_channels,
    function.prune_linear_out_channels,
)


class PassThroughPruner(tp.pruner.BasePruningFunc):
    """A layer that keeps its input's channels (x * spatial map): pruning passes through it.
    It has no per-channel weights; its channel count (recorded by `build_graph`) lets torch-pruning
    infer widths across it (e.g. the flatten before a VGG/AlexNet classifier)."""

    TARGET_MODULES = (SpatialGate,)

    def prune_out_channels(self, layer, idxs):
        layer._edgexray_channels -= len(idxs)
        return layer

    prune_in_channels = prune_out_channels  # same function: in and out channels are coupled

    def get_out_channels(self, layer):
        return getattr(layer, "_edgexray_channels", None)

    get_in_channels = get_out_channels


@dataclass
class GroupInfo:
    """One coupled set of channels: pruning index i removes channel i of every member."""

    name: str  # qualified name of the root layer, stable across pruning steps
    group: object  # tp Group with all current channels
    channels: int
    stage: int  # 1..NUM_STAGES
    members: list[str] = field(default_factory=list)  # layers whose output channels are in it


GATE_TYPES = (ChannelGate, SEGate, SpatialGate, SqueezeExcitation)


class ShuffleStopPruner(tp.pruner.BasePruningFunc):
    """ShuffleNetV2's channel shuffle (models.mobile.ChannelShuffle): an interleaving permutation
    that torch-pruning cannot follow. Separate in/out functions decouple its input from its output,
    so no group crosses it, and `prunable_groups` leaves out every group that reaches it (those
    cover the spine); what remains (the branch-internal widths, the stem, the last conv) never
    meets a shuffle and prunes exactly. Its functions never run: no group touching it is pruned."""

    TARGET_MODULES = (ChannelShuffle,)

    def prune_out_channels(self, layer, idxs):
        raise RuntimeError("a group crossing a channel shuffle must not be pruned")

    def prune_in_channels(self, layer, idxs):
        raise RuntimeError("a group crossing a channel shuffle must not be pruned")

    def get_out_channels(self, layer):
        return getattr(layer, "_edgexray_channels", None)

    get_in_channels = get_out_channels


def build_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """The dependency graph with the spatial gate registered as pass-through and the channel
    shuffle as a stop."""
    model.eval()
    # the trace's forward pass records each spatial gate's channel count for PassThroughPruner
    hooks = [
        g.register_forward_pre_hook(
            lambda mod, args: setattr(mod, "_edgexray_channels", int(args[0].shape[1]))
        )
        for g in model.modules()
        if isinstance(g, (SpatialGate, ChannelShuffle))
    ]
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example_input,
                customized_pruners={SpatialGate: PassThroughPruner(), ChannelShuffle: ShuffleStopPruner()},
                verbose=False,
            )
    finally:
        for h in hooks:
            h.remove()


def gate_hidden_layers(model: nn.Module) -> list[nn.Module]:
    """The first conv of each gate MLP: its output is the gate's hidden width, kept as built."""
    out = []
    for m in model.modules():
        if isinstance(m, ChannelGate):
            out.append(m.mlp[0])
        elif isinstance(m, SEGate):
            out.append(m.fc[0])
    return out


def module_stages(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Stage 1..4 of every conv by the resolution of its output: the smallest resolution is stage 4,
    the next larger 3, then 2, and everything larger (stem included) stage 1. Linear layers after
    global pooling are stage 4. Works for any CNN, not only ResNet's layer1..layer4."""
    sizes: dict[nn.Module, int] = {}
    # convs inside a gate see globally pooled maps: they take the stage of what they gate
    in_gates = {sub for m in model.modules() if isinstance(m, GATE_TYPES) for sub in m.modules()}
    _forward_recording(
        model,
        example_input,
        [m for m in model.modules() if isinstance(m, nn.Conv2d) and m not in in_gates],
        lambda mod, out: sizes.__setitem__(mod, out.shape[-1] * out.shape[-2]),
    )
    levels = sorted(set(sizes.values()), reverse=True)  # largest resolution first
    rank = {s: i for i, s in enumerate(levels)}
    names = {m: n for n, m in model.named_modules()}
    stages = {names[m]: max(1, NUM_STAGES - (len(levels) - 1 - rank[s])) for m, s in sizes.items()}
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            stages[n] = NUM_STAGES
    return stages


def prunable_groups(model: nn.Module, DG: tp.DependencyGraph, stages: dict[str, int]) -> list[GroupInfo]:
    """Every group that may shrink: not reaching the network output, not a gate's hidden width,
    not meeting a channel shuffle."""
    hidden = set(gate_hidden_layers(model))
    names = {m: n for n, m in model.named_modules()}
    # the layer computing the network output is a sink of the graph (or feeds an _OutputOp)
    sinks = {node.module for node in DG.module2node.values() if not node.outputs}
    groups = []
    for group in DG.get_all_groups(ignored_layers=[], root_module_types=(nn.Conv2d, nn.Linear)):
        members, reaches_output, touches_hidden, crosses_shuffle = [], False, False, False
        for dep, _ in group:
            target = dep.target.module
            if isinstance(target, tp.ops._OutputOp) or (target in sinks and dep.handler in OUT_FNS):
                reaches_output = True
            if dep.handler in OUT_FNS:
                members.append(target)
                touches_hidden |= target in hidden
            crosses_shuffle |= isinstance(target, ChannelShuffle)
        if reaches_output or touches_hidden or crosses_shuffle or not members:
            continue
        root = group[0].dep.target.module
        stage = max([stages[names[m]] for m in members if names[m] in stages] or [1])
        groups.append(GroupInfo(names[root], group, len(group[0].idxs), stage, [names[m] for m in members]))
    return groups


def prune_group(DG: tp.DependencyGraph, info: GroupInfo, idxs: list[int]) -> None:
    """Remove channels `idxs` of a group (all coupled layers at once)."""
    if not idxs:
        return
    root_dep = info.group[0].dep
    group = DG.get_pruning_group(root_dep.target.module, root_dep.handler, idxs)
    if not DG.check_pruning_group(group):
        raise EdgeXrayError(
            f"cannot remove {len(idxs)} of {info.channels} channels of "
            f"{info.name}: a coupled layer would lose all its channels; "
            "lower the pruning ratio"
        )
    group.prune()


def conv_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv and linear layer by name."""
    return {
        n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def spine_widths(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Output channels of each stage module: ResNet's layer1..layer4 (ShuffleNetV2's
    stage2..stage4), else every child of `features` (torchvision-style models)."""
    stages = [
        (n, getattr(model, n))
        for n in ("layer1", "layer2", "layer3", "layer4", "stage2", "stage3", "stage4")
        if hasattr(model, n)
    ]
    if not stages and isinstance(getattr(model, "features", None), nn.Sequential):
        stages = [(f"features.{n}", m) for n, m in model.features.named_children()]
    names = {m: n for n, m in stages}
    widths: dict[str, int] = {}
    _forward_recording(
        model, example_input, list(names), lambda mod, out: widths.__setitem__(names[mod], int(out.shape[1]))
    )
    return widths


def _forward_recording(model: nn.Module, example_input: torch.Tensor, modules, record) -> None:
    """One eval-mode forward pass calling record(module, output) for each of `modules`."""
    hooks = [m.register_forward_hook(lambda mod, i, o: record(mod, o)) for m in modules]
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for h in hooks:
            h.remove()
