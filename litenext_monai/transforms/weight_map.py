"""Marginal Weight Loss weight maps as MONAI transforms (paper §3.2, Algorithm 1)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type, convert_to_tensor

from litenext_monai.losses.marginal_weight import (
    DEFAULT_KERNEL_SIZE,
    DEFAULT_W_BACKGROUND,
    DEFAULT_W_MARGIN,
    DEFAULT_W_OBJECT,
    marginal_weight_map,
    multiclass_marginal_weight_map,
)

__all__ = ["MarginalWeightMap", "MarginalWeightMapd"]


class MarginalWeightMap(Transform):
    """Compute the MWL pixel weight map of one channel-first mask.

    See :func:`litenext_monai.losses.marginal_weight_map` for the definition (exact erosion,
    background outside the image). The mask is binarised at 0.5; each channel is independent.

    With ``num_classes`` = N ≥ 2 the input is a label map ``1×H×W`` (values ``0 .. N``) and the
    output stacks the one-vs-rest maps of classes 1 .. N as channels, ``N×H×W``
    (:func:`litenext_monai.losses.multiclass_marginal_weight_map`), which is what
    :class:`~litenext_monai.losses.SoftmaxMarginalWeightLoss` takes.

    Args:
        kernel_size: odd side k of the square structuring element, in pixels.
        w_margin: weight w_m of the boundary band.
        w_object: weight w_o of the object interior.
        w_background: weight w_b of the far background.
        num_classes: N foreground classes; 1 (default) treats the input as binary mask channels.
    """

    def __init__(
        self,
        kernel_size: int = DEFAULT_KERNEL_SIZE,
        w_margin: float = DEFAULT_W_MARGIN,
        w_object: float = DEFAULT_W_OBJECT,
        w_background: float = DEFAULT_W_BACKGROUND,
        num_classes: int = 1,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}.")
        self.num_classes = num_classes
        self.kernel_size = kernel_size
        self.w_margin = w_margin
        self.w_object = w_object
        self.w_background = w_background

    def __call__(self, mask: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return the float32 weight map in the input's type.

        ``C×H×W`` for a binary ``C×H×W`` mask; ``N×H×W`` for a ``1×H×W`` label map when
        ``num_classes`` = N ≥ 2.

        Raises:
            ValueError: if ``mask`` is not 3-D, or (N ≥ 2) not one channel or holding values outside
                ``0 .. N`` (the message names the mask's file when its meta data has one).
        """
        if mask.ndim != 3:
            raise ValueError(f"mask must have shape C×H×W, got shape {tuple(mask.shape)}.")
        tensor = convert_to_tensor(mask, dtype=torch.float32, track_meta=False)
        if self.num_classes == 1:
            weight = marginal_weight_map(
                tensor[None], self.kernel_size, self.w_margin, self.w_object, self.w_background
            )[0]
        else:
            meta = getattr(mask, "meta", None) or {}
            name = str(meta.get("filename_or_obj") or "label map")
            if mask.shape[0] != 1:
                raise ValueError(f"{name}: a label map must have shape 1×H×W, got {tuple(mask.shape)}.")
            try:
                weight = multiclass_marginal_weight_map(
                    tensor[None],
                    self.num_classes,
                    self.kernel_size,
                    self.w_margin,
                    self.w_object,
                    self.w_background,
                )[0]
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from err
        dtype = np.float32 if isinstance(mask, np.ndarray) else torch.float32
        return convert_to_dst_type(weight, dst=mask, dtype=dtype)[0]


class MarginalWeightMapd(MapTransform):
    """Dictionary wrapper of :class:`MarginalWeightMap`: mask at ``K`` → weight map at ``f"{K}_{postfix}"``.

    Apply it AFTER every geometric augmentation of the mask (e.g. after ``DualViewd``), so that
    the weights describe the boundary of the mask that actually supervises the prediction.

    Args:
        keys: mask keys.
        output_key_postfix: the weight map of key ``K`` is written to ``f"{K}_{output_key_postfix}"``
            (``"label"`` → ``"label_weight"`` by default).
        kernel_size: odd side k of the square structuring element, in pixels.
        w_margin: weight w_m of the boundary band.
        w_object: weight w_o of the object interior.
        w_background: weight w_b of the far background.
        allow_missing_keys: do not raise when a key is missing.
        num_classes: N foreground classes; N ≥ 2 turns each ``1×H×W`` label map into ``N×H×W``
            per-class maps (see :class:`MarginalWeightMap`).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key_postfix: str = "weight",
        kernel_size: int = DEFAULT_KERNEL_SIZE,
        w_margin: float = DEFAULT_W_MARGIN,
        w_object: float = DEFAULT_W_OBJECT,
        w_background: float = DEFAULT_W_BACKGROUND,
        allow_missing_keys: bool = False,
        num_classes: int = 1,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_key_postfix = output_key_postfix
        self.converter = MarginalWeightMap(kernel_size, w_margin, w_object, w_background, num_classes)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}_{self.output_key_postfix}"] = self.converter(d[key])
        return d
