"""Checkpoints that load with `torch.load(weights_only=True)`: tensors and plain data only.

A checkpoint names its registered architecture and options and stores the channel structure
of every conv / batch-norm / linear layer, so a pruned network is rebuilt from the registry and
resized layer by layer; no module is ever unpickled.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgexray.fsutil import atomic_write_bytes, refuse_existing
from edgexray.models import create_model
from edgexray.runtime.errors import EdgeXrayError, first_line
from edgexray.runtime.preprocess import Preprocess

FORMAT = "edgexray.checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module  # in eval mode
    arch: str
    model_options: dict  # create_model keyword arguments (num_classes, in_chans, width)
    class_names: tuple
    preprocess: Preprocess
    train_config: dict | None = None
    metrics: dict | None = None
    structure: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def input_shape(self) -> tuple:
        return (1, self.preprocess.channels, self.preprocess.size, self.preprocess.size)


def model_structure(model: nn.Module) -> dict:
    """Channels per layer: what a pruned model needs to be rebuilt from its registry name."""
    structure = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            structure[name] = {
                "in_channels": m.in_channels,
                "out_channels": m.out_channels,
                "groups": m.groups,
            }
        elif isinstance(m, nn.BatchNorm2d):
            structure[name] = {"num_features": m.num_features}
        elif isinstance(m, nn.Linear):
            structure[name] = {"in_features": m.in_features, "out_features": m.out_features}
    return structure


def apply_structure(model: nn.Module, structure: dict) -> nn.Module:
    """Resize every conv / batch-norm / linear layer to `structure` (weights follow by load)."""
    modules = dict(model.named_modules())
    for name, dims in structure.items():
        m = modules.get(name)
        if m is None:
            raise EdgeXrayError(
                f"checkpoint layer {name!r} does not exist in the architecture; "
                "the checkpoint was made by another edgexray version or model"
            )
        for key, value in dims.items():
            setattr(m, key, value)
        if isinstance(m, nn.Conv2d):
            m.weight = nn.Parameter(
                m.weight.new_empty((m.out_channels, m.in_channels // m.groups, *m.kernel_size))
            )
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias.new_empty(m.out_channels))
        elif isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            if m.affine:
                m.weight, m.bias = nn.Parameter(m.weight.new_empty(n)), nn.Parameter(m.bias.new_empty(n))
            if m.track_running_stats:
                m.running_mean, m.running_var = m.running_mean.new_zeros(n), m.running_var.new_ones(n)
        elif isinstance(m, nn.Linear):
            m.weight = nn.Parameter(m.weight.new_empty((m.out_features, m.in_features)))
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias.new_empty(m.out_features))
    return model


def save_checkpoint(
    path,
    model: nn.Module,
    *,
    arch: str,
    model_options: dict,
    class_names,
    preprocess: Preprocess,
    train_config: dict | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
    force: bool = False,
) -> Path:
    path = Path(path)
    refuse_existing(path, force, "checkpoint")
    payload = {
        "format": FORMAT,
        "arch": arch,
        "model_options": dict(model_options),
        "class_names": list(class_names),
        "preprocess": preprocess.to_dict(),
        "train_config": train_config,
        "metrics": metrics,
        "extra": extra or {},
        "structure": model_structure(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


# key -> (type, description) of what every checkpoint holds
_FIELDS = {
    "arch": (str, "an architecture name"),
    "model_options": (dict, "a dict of model options"),
    "class_names": (list, "a list of class names"),
    "preprocess": (dict, "a dict of preprocessing settings"),
    "structure": (dict, "a dict of layer sizes"),
    "state_dict": (dict, "a dict of weight tensors"),
}

MODEL_OPTIONS = {"num_classes", "in_chans", "width"}  # what a checkpoint may pass to create_model


def _check_payload(path: Path, payload: dict) -> None:
    for key, (kind, what) in _FIELDS.items():
        if not isinstance(payload.get(key), kind):
            found = "missing" if key not in payload else f"a {type(payload[key]).__name__}"
            raise EdgeXrayError(
                f"checkpoint {str(path)!r} is damaged: {key!r} should be {what} "
                f"but is {found}; re-run `edgexray train` or use another checkpoint"
            )
    unknown = set(payload["model_options"]) - MODEL_OPTIONS
    if unknown:
        raise EdgeXrayError(
            f"checkpoint {str(path)!r} is damaged: unknown model options "
            f"{sorted(map(str, unknown))}; allowed: {sorted(MODEL_OPTIONS)}"
        )
    if not all(
        isinstance(d, dict) and all(isinstance(v, int) for v in d.values())
        for d in payload["structure"].values()
    ):
        raise EdgeXrayError(
            f"checkpoint {str(path)!r} is damaged: its layer structure is not "
            "a dict of channel counts; re-run `edgexray train`"
        )
    names = payload["class_names"]
    if len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise EdgeXrayError(
            f"checkpoint {str(path)!r} is damaged: class_names {names!r:.200}; "
            "expected two or more names; re-run `edgexray train`"
        )
    if not all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
        raise EdgeXrayError(
            f"checkpoint {str(path)!r} is damaged: its state_dict holds values "
            "that are not tensors; re-run `edgexray train`"
        )
    for key in ("train_config", "metrics", "extra"):
        if not isinstance(payload.get(key), (dict, type(None))):
            raise EdgeXrayError(
                f"checkpoint {str(path)!r} is damaged: {key!r} should be a dict; re-run `edgexray train`"
            )


def load_checkpoint(path, arch: str | None = None, num_classes: int | None = None) -> Checkpoint:
    """Rebuild the model of a checkpoint; `arch` / `num_classes` check what the caller expects."""
    path = Path(path)
    if not path.is_file():
        raise EdgeXrayError(
            f"checkpoint {str(path)!r} not found; pass the .pt file written by "
            "`edgexray train` or `edgexray prune`"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on a damaged or foreign file
        raise EdgeXrayError(
            f"checkpoint {str(path)!r} cannot be read ({first_line(e)}); it is "
            "empty, corrupt or not an edgexray checkpoint; pass the model.pt "
            "written by `edgexray train` or `edgexray prune`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise EdgeXrayError(
            f"{str(path)!r} is not an edgexray checkpoint (expected format "
            f"{FORMAT!r}); checkpoints are written by `edgexray train`"
        )
    _check_payload(path, payload)
    if arch and payload["arch"] != arch:
        raise EdgeXrayError(
            f"checkpoint {str(path)!r} holds a {payload['arch']} model, not {arch}; "
            f"pass --arch {payload['arch']} or another checkpoint"
        )
    n_classes = len(payload["class_names"])
    if num_classes and n_classes != num_classes:
        raise EdgeXrayError(
            f"checkpoint {str(path)!r} has {n_classes} classes "
            f"({', '.join(payload['class_names'])}), the data has {num_classes}; "
            "train a new model for these classes"
        )
    try:
        model = create_model(payload["arch"], **payload["model_options"])
        apply_structure(model, payload["structure"])
        model.load_state_dict(payload["state_dict"])
        preprocess = Preprocess.from_dict(payload["preprocess"])
    except (TypeError, ValueError, RuntimeError) as e:  # wrong options, sizes or tensor shapes
        raise EdgeXrayError(
            f"checkpoint {str(path)!r} is damaged: its {payload['arch']} model "
            f"cannot be rebuilt from it ({first_line(e)}); re-run `edgexray "
            "train` or use another checkpoint"
        ) from None
    model.eval()
    return Checkpoint(
        model=model,
        arch=payload["arch"],
        model_options=payload["model_options"],
        class_names=tuple(payload["class_names"]),
        preprocess=preprocess,
        train_config=payload["train_config"],
        metrics=payload["metrics"],
        structure=payload["structure"],
        extra=payload["extra"] or {},
        path=path,
    )
