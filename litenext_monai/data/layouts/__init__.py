"""Dataset layouts: one converter per published release, registered by name.

``prepare_dataset NAME RAW_DIR OUT_DIR`` looks ``NAME`` up in :data:`LAYOUTS`.
"""

from __future__ import annotations

from .base import Case, Layout
from .busi import BUSI
from .dsb2018 import DSB2018
from .folders import FOLDERS
from .glas import GLAS
from .isic import ISIC2016, ISIC2018
from .lungs import LUNG_XRAY
from .monuseg import MONUSEG
from .ph2 import PH2
from .polyp import CVC_CLINICDB, CVC_COLONDB, KVASIR_SEG
from .retina import CHASE_DB1, DRIVE
from .sunnybrook import SUNNYBROOK_ENDO, SUNNYBROOK_EPI

__all__ = ["LAYOUTS", "Case", "Layout", "get_layout", "list_layouts"]

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        DSB2018,
        GLAS,
        ISIC2018,
        PH2,
        SUNNYBROOK_ENDO,
        SUNNYBROOK_EPI,
        LUNG_XRAY,
        ISIC2016,
        BUSI,
        KVASIR_SEG,
        CVC_CLINICDB,
        CVC_COLONDB,
        DRIVE,
        CHASE_DB1,
        MONUSEG,
        FOLDERS,
    )
}


def get_layout(name: str) -> Layout:
    """The layout registered as ``name`` (case-insensitive, ``-`` and ``_`` equivalent).

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    key = name.lower().replace("-", "_")
    if key not in LAYOUTS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(LAYOUTS)}")
    return LAYOUTS[key]


def list_layouts() -> list[tuple[str, str]]:
    """``(name, title)`` of every registered layout, in registration order."""
    return [(layout.name, layout.title) for layout in LAYOUTS.values()]
