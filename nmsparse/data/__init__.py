"""Data: array, TFDS, image-folder, digits and synthetic sources; on-device augmentation; the
streaming pipeline (``nmsparse.data.stream``, Grain, imported on use)."""

from nmsparse.data.augment import augment, normalize, random_crop_flip
from nmsparse.data.sources import (ArrayDataset, DatasetNotFoundError, load_arrays, load_dataset,
                                   limit, load_image_folder, load_sklearn_digits, load_tfds,
                                   synthetic)

__all__ = [
    "ArrayDataset", "DatasetNotFoundError", "augment", "limit", "load_arrays", "load_dataset",
    "load_image_folder", "load_sklearn_digits", "load_tfds", "normalize", "random_crop_flip",
    "synthetic",
]
