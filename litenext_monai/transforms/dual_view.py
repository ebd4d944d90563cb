"""Strong and weak views of one sample for SeRP training (paper §3.3; spec §2.4 and §6).

The strong view feeds the main encoder and is supervised by the mask, so image and mask share
one geometric transform; photometric changes touch the image only. The weak view feeds the
target encoder: the original image under its own, independently drawn geometric transform.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.networks.layers import GaussianFilter
from monai.transforms import MapTransform, RandomizableTransform, Rotate
from monai.utils import convert_to_dst_type, convert_to_tensor

__all__ = [
    "DEFAULT_BLUR_SIGMA",
    "DEFAULT_BRIGHTNESS",
    "DEFAULT_CONTRAST",
    "DEFAULT_PROB_BLUR",
    "DEFAULT_PROB_HFLIP",
    "DEFAULT_PROB_INTENSITY",
    "DEFAULT_PROB_ROTATE",
    "DEFAULT_PROB_VFLIP",
    "DEFAULT_ROTATE_RANGE_DEG",
    "DEFAULT_SATURATION",
    "DEFAULT_VALUE_RANGE",
    "DualViewd",
]

#: Rotation angle limit in degrees (authors' ``Rotate(limit=20, p=1.0)``).
DEFAULT_ROTATE_RANGE_DEG = 20.0
DEFAULT_PROB_ROTATE = 1.0
#: Flip probabilities of the W axis (horizontal) and the H axis (vertical), authors' code.
DEFAULT_PROB_HFLIP = 0.5
DEFAULT_PROB_VFLIP = 0.1
#: Gaussian blur probability and σ range in pixels. Albumentations' default ``GaussianBlur``
#: (used by the authors) draws an odd kernel of 3, 5 or 7 pixels and derives σ with OpenCV's
#: rule ``0.3((k − 1)/2 − 1) + 0.8``, i.e. σ ∈ {0.8, 1.1, 1.4}; we draw σ uniformly over that span.
DEFAULT_PROB_BLUR = 0.5
DEFAULT_BLUR_SIGMA = (0.8, 1.4)
#: Brightness/contrast/saturation jitter (Albumentations ``ColorJitter`` and
#: ``RandomBrightnessContrast`` default limits of 0.2), applied together with this probability.
DEFAULT_PROB_INTENSITY = 0.5
DEFAULT_BRIGHTNESS = 0.2
DEFAULT_CONTRAST = 0.2
DEFAULT_SATURATION = 0.2
#: Intensities of the strong image are clipped to this range after the jitter.
DEFAULT_VALUE_RANGE = (0.0, 1.0)

# ITU-R BT.601 luma weights, as used by colour-jitter implementations for "greyscale".
_LUMA = (0.299, 0.587, 0.114)

_Geometry = tuple[float, bool, bool]  # (angle in radians, flip W axis, flip H axis)


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}.")


def _grey(image: torch.Tensor) -> torch.Tensor:
    """Per-pixel greyscale ``1×H×W`` of a 1- or 3-channel image."""
    if image.shape[0] == 3:
        weights = torch.tensor(_LUMA, dtype=image.dtype, device=image.device).view(3, 1, 1)
        return (image * weights).sum(dim=0, keepdim=True)
    return image.mean(dim=0, keepdim=True)


class DualViewd(RandomizableTransform, MapTransform):
    """Create the SeRP strong view (in place) and weak view (new key) of one sample.

    Strong view, applied to every key in ``keys`` with ONE geometric draw:

    * rotation by an angle uniform in ``±rotate_range_deg`` (probability ``prob_rotate``),
      zero padding, same size; the image is interpolated bilinearly, every other key (masks)
      by nearest neighbour, so masks stay binary;
    * flip of the W axis (last axis, "horizontal") with ``prob_hflip`` and of the H axis with
      ``prob_vflip``;
    * on ``image_key`` only: Gaussian blur with σ uniform in ``blur_sigma`` (``prob_blur``), then
      a joint brightness (multiply by ``1 ± brightness``), contrast (blend with the mean grey
      level, factor ``1 ± contrast``) and, for 3-channel images, saturation (blend with the
      per-pixel grey, factor ``1 ± saturation``) jitter (``prob_intensity``), after which the
      intensities are clipped to ``value_range``. Hue jitter is not applied.

    Weak view: the ORIGINAL image (before the strong transform) under a second, independent
    geometric draw with the same ranges and no photometric change, written to
    ``weak_image_key``.

    Images are ``C×H×W`` float (C = 1 or 3), masks ``C×H×W`` (usually 1×H×W); numpy arrays,
    tensors and MetaTensors are returned in their own type (images as float32, masks in their
    own dtype). Metadata is carried over unchanged and the transform is not invertible.
    Randomness comes only from ``self.R``; ``set_random_state(seed)`` makes it reproducible.

    Args:
        keys: keys that receive the strong geometric transform: ``image_key`` and the masks.
        image_key: the image; must be one of ``keys``.
        weak_image_key: output key of the weak view.
        rotate_range_deg: rotation limit in degrees (both views).
        prob_rotate: rotation probability (both views).
        prob_hflip: W-axis flip probability (both views).
        prob_vflip: H-axis flip probability (both views).
        prob_blur: Gaussian blur probability (strong view).
        blur_sigma: ``(min, max)`` blur σ in pixels.
        prob_intensity: brightness/contrast/saturation jitter probability (strong view).
        brightness: brightness jitter limit.
        contrast: contrast jitter limit.
        saturation: saturation jitter limit (3-channel images only).
        value_range: ``(low, high)`` clipping range after the jitter; ``None`` disables clipping.
        allow_missing_keys: do not raise when a key is missing.

    Raises:
        ValueError: on probabilities outside [0, 1], negative limits, a bad σ range or an
            ``image_key`` that is not in ``keys``.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        image_key: str = "image",
        weak_image_key: str = "image_weak",
        rotate_range_deg: float = DEFAULT_ROTATE_RANGE_DEG,
        prob_rotate: float = DEFAULT_PROB_ROTATE,
        prob_hflip: float = DEFAULT_PROB_HFLIP,
        prob_vflip: float = DEFAULT_PROB_VFLIP,
        prob_blur: float = DEFAULT_PROB_BLUR,
        blur_sigma: Sequence[float] = DEFAULT_BLUR_SIGMA,
        prob_intensity: float = DEFAULT_PROB_INTENSITY,
        brightness: float = DEFAULT_BRIGHTNESS,
        contrast: float = DEFAULT_CONTRAST,
        saturation: float = DEFAULT_SATURATION,
        value_range: Sequence[float] | None = DEFAULT_VALUE_RANGE,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if image_key not in self.keys:
            raise ValueError(f"image_key {image_key!r} must be one of keys {self.keys}.")
        for name, value in (
            ("prob_rotate", prob_rotate),
            ("prob_hflip", prob_hflip),
            ("prob_vflip", prob_vflip),
            ("prob_blur", prob_blur),
            ("prob_intensity", prob_intensity),
        ):
            _check_probability(name, value)
        for name, value in (
            ("rotate_range_deg", rotate_range_deg),
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if len(blur_sigma) != 2 or not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"blur_sigma must be (min, max) with 0 < min <= max, got {blur_sigma}.")
        self.image_key = image_key
        self.weak_image_key = weak_image_key
        self.rotate_range = float(np.deg2rad(rotate_range_deg))
        self.prob_rotate = prob_rotate
        self.prob_hflip = prob_hflip
        self.prob_vflip = prob_vflip
        self.prob_blur = prob_blur
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.prob_intensity = prob_intensity
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.value_range = None if value_range is None else (float(value_range[0]), float(value_range[1]))
        self._strong: _Geometry = (0.0, False, False)
        self._weak: _Geometry = (0.0, False, False)
        self._sigma: float | None = None
        self._jitter: tuple[float, float, float] | None = None

    def _draw_geometry(self) -> _Geometry:
        rotate = self.R.rand() < self.prob_rotate
        angle = self.R.uniform(-self.rotate_range, self.rotate_range)
        hflip = self.R.rand() < self.prob_hflip
        vflip = self.R.rand() < self.prob_vflip
        return (float(angle) if rotate else 0.0, bool(hflip), bool(vflip))

    def randomize(self, data: object = None) -> None:
        """Draw the strong geometry, the photometric parameters and the weak geometry from ``self.R``.

        Every value is drawn whatever the probabilities decide, so one parameter's outcome never
        shifts the random stream of the others.
        """
        self._strong = self._draw_geometry()
        blur = self.R.rand() < self.prob_blur
        sigma = self.R.uniform(*self.blur_sigma)
        self._sigma = float(sigma) if blur else None
        jitter = self.R.rand() < self.prob_intensity
        factors = (
            float(self.R.uniform(1 - self.brightness, 1 + self.brightness)),
            float(self.R.uniform(1 - self.contrast, 1 + self.contrast)),
            float(self.R.uniform(1 - self.saturation, 1 + self.saturation)),
        )
        self._jitter = factors if jitter else None
        self._weak = self._draw_geometry()

    @staticmethod
    def _geometric(image: torch.Tensor, geometry: _Geometry, mode: str) -> torch.Tensor:
        angle, hflip, vflip = geometry
        if angle != 0.0:
            rotate = Rotate(angle=angle, keep_size=True, padding_mode="zeros", align_corners=False)
            image = convert_to_tensor(rotate(image, mode=mode), track_meta=False)
        if hflip:
            image = torch.flip(image, dims=(-1,))
        if vflip:
            image = torch.flip(image, dims=(-2,))
        return image

    def _photometric(self, image: torch.Tensor) -> torch.Tensor:
        if self._sigma is not None:
            image = GaussianFilter(spatial_dims=2, sigma=self._sigma)(image[None])[0]
        if self._jitter is not None:
            brightness, contrast, saturation = self._jitter
            image = image * brightness
            image = contrast * image + (1 - contrast) * _grey(image).mean()
            if image.shape[0] == 3:
                image = saturation * image + (1 - saturation) * _grey(image)
            if self.value_range is not None:
                image = image.clamp(*self.value_range)
        return image

    @staticmethod
    def _as_tensor(value: NdarrayOrTensor, key: Hashable) -> torch.Tensor:
        if value.ndim != 3:
            raise ValueError(f"DualViewd expects C×H×W arrays, key {key!r} has shape {tuple(value.shape)}.")
        return convert_to_tensor(value, dtype=torch.float32, track_meta=False)

    @staticmethod
    def _restore(tensor: torch.Tensor, like: NdarrayOrTensor, as_float: bool) -> NdarrayOrTensor:
        dtype = None
        if as_float:
            dtype = np.float32 if isinstance(like, np.ndarray) else torch.float32
        return convert_to_dst_type(tensor, dst=like, dtype=dtype)[0]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            is_image = key == self.image_key
            original = d[key]
            view = self._geometric(
                self._as_tensor(original, key), self._strong, "bilinear" if is_image else "nearest"
            )
            if is_image:
                view = self._photometric(view)
                weak = self._geometric(self._as_tensor(original, key), self._weak, "bilinear")
                d[self.weak_image_key] = self._restore(weak, original, as_float=True)
            d[key] = self._restore(view, original, as_float=is_image)
        return d
