"""Image folders -> splits -> arrays -> torch datasets and loaders.

Layout: `root/<class>/**/<image>` (torchvision ImageFolder). Images are decoded and resized
once (`load_arrays`, float16 in [0, 1]); datasets augment and normalize those arrays exactly as
`Preprocess.normalize` does on the device.

One module per job: `scan` (the folder index), `splits` (config, patient grouping, splits.json),
`arrays` (decoding, the array cache, normalization statistics), `augment` (augmentation, MixUp),
`loader` (dataset, loaders, class weights) and `prepared` (all of them at once).
"""

from edgexray.data.arrays import (
    IMAGENET_GRAY_MEAN,
    IMAGENET_GRAY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    decode_all,
    load_arrays,
    norm_stats,
)
from edgexray.data.augment import AugmentConfig, augment_image, mixup, mixup_batch
from edgexray.data.loader import XrayDataset, class_weights, make_loader
from edgexray.data.prepared import PreparedData, prepare
from edgexray.data.scan import ImageFolderIndex, scan_image_folder
from edgexray.data.splits import (
    KNOWN_GROUP_KEYS,
    SPLIT_NAMES,
    SPLITS_FORMAT,
    Grouping,
    SplitConfig,
    StoredSplits,
    grouping_of,
    make_splits,
    read_splits,
    split_counts,
    split_group_ids,
    write_splits,
)

__all__ = [
    "IMAGENET_GRAY_MEAN",
    "IMAGENET_GRAY_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KNOWN_GROUP_KEYS",
    "SPLIT_NAMES",
    "SPLITS_FORMAT",
    "AugmentConfig",
    "Grouping",
    "ImageFolderIndex",
    "PreparedData",
    "SplitConfig",
    "StoredSplits",
    "XrayDataset",
    "augment_image",
    "class_weights",
    "decode_all",
    "grouping_of",
    "load_arrays",
    "make_loader",
    "make_splits",
    "mixup",
    "mixup_batch",
    "norm_stats",
    "prepare",
    "read_splits",
    "scan_image_folder",
    "split_counts",
    "split_group_ids",
    "write_splits",
]
