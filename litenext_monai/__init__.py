"""litenext-monai: LiteNeXt lightweight 2D medical image segmentation as MONAI components."""

from __future__ import annotations

__version__ = "0.1.0"
