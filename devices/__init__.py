"""Device profiles (one TOML per target) and their loader. Standard library only."""

from edgexray.devices.profiles import (
    ARCHES,
    PRECISIONS,
    RUNTIMES,
    SCHEDULES,
    DeviceProfile,
    PruneSettings,
    list_profiles,
    load_profile,
)

__all__ = [
    "ARCHES",
    "PRECISIONS",
    "RUNTIMES",
    "SCHEDULES",
    "DeviceProfile",
    "PruneSettings",
    "list_profiles",
    "load_profile",
]
