"""Model zoo: `create_model("resnet18_cbam", num_classes=3, in_chans=1, width=0.25)`."""

from edgexray.models.attention import CBAM, ChannelGate, SEGate, SpatialGate, channel_gates
from edgexray.models.registry import ArchSpec, create_model, list_models, model_info

__all__ = [
    "CBAM",
    "ChannelGate",
    "SEGate",
    "SpatialGate",
    "channel_gates",
    "ArchSpec",
    "create_model",
    "list_models",
    "model_info",
]
