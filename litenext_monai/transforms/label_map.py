"""Loading label maps of several classes (values ``0 .. N``) as channel-first ``MetaTensor``."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from litenext_monai.io import read_image
from litenext_monai.transforms.io import to_meta_tensor

__all__ = ["LoadLabelMap2D", "LoadLabelMap2Dd"]


class LoadLabelMap2D(Transform):
    """Load a 2D label map file (PNG, TIFF, NIfTI, …) as a ``1×H×W`` ``float32`` ``MetaTensor``.

    The stored values are the class indices ``0 .. num_classes`` (0 = background), kept as they
    are (no binarisation, unlike ``LoadImage2D(is_label=True)``). The meta data matches
    :class:`~litenext_monai.transforms.LoadImage2D`'s (``filename_or_obj``, ``spatial_shape``,
    affine), so the pair ``LoadImage2Dd(keys="image")`` + ``LoadLabelMap2Dd(keys="label")`` gives
    the same geometry as the binary loader. Palette PNGs keep their indices.

    Args:
        num_classes: N foreground classes; any value above N is an error.

    Raises:
        ValueError: on read failure, colour label maps whose channels differ, or values that are
            not integers in ``0 .. N`` (each message names the file).
    """

    def __init__(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}.")
        self.num_classes = num_classes

    def __call__(self, filename: str | os.PathLike) -> MetaTensor:
        array, meta = read_image(filename, as_label=True)
        data = np.asarray(array)
        if data.ndim == 3:
            if not all(np.array_equal(data[..., 0], data[..., c]) for c in range(1, data.shape[-1])):
                raise ValueError(f"{filename}: a label map must have one channel (or equal channels)")
            data = data[..., 0]
        bad = (data < 0) | (data > self.num_classes)
        if np.issubdtype(data.dtype, np.floating):
            bad |= data != np.round(data)
        if bad.any():
            shown = np.unique(data[bad])[:8].tolist()
            raise ValueError(
                f"{filename}: label map values {shown} are not class indices 0..{self.num_classes} "
                f"(num_classes={self.num_classes}; a 0/255 file is a binary mask, not a label map)"
            )
        return to_meta_tensor(data[None].astype(np.float32), meta, filename)


class LoadLabelMap2Dd(MapTransform):
    """Dictionary version of :class:`LoadLabelMap2D`: the file path at each key → ``1×H×W`` label map.

    Args:
        keys: label keys (their values are file paths).
        num_classes: N foreground classes.
        allow_missing_keys: do not raise when a key is missing.
    """

    def __init__(self, keys: KeysCollection, num_classes: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadLabelMap2D(num_classes)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
