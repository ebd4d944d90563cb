"""Which storage SOP classes the DICOM node segments.

The node negotiates every storage SOP class that pynetdicom knows, so that a sender pushing a
whole study (images plus dose reports, plans, presentation states) gets a per-instance answer
instead of a failed association. Only the image classes below are stored and segmented; any other
object is refused with the C-STORE status ``0x0122`` (Refused: SOP Class not supported).

Transfer syntaxes are offered only when the installed pixel decoders (pydicom's handlers and the
pylibjpeg/pillow plugins) can read them (:func:`decodable_transfer_syntaxes`); the others (MPEG and
HEVC video, JPEG XL, JPEG 2000 Part 2 multi-component, JPIP, ...) are rejected at presentation-context
negotiation, so the sender learns before sending that the node cannot read them. Deflated Explicit VR
Little Endian is left out unless asked for: pynetdicom inflates it in memory without a limit.
"""

from __future__ import annotations

import functools

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, sop_class

__all__ = ["IMAGE_STORAGE_CLASSES", "decodable_transfer_syntaxes", "is_image_storage", "sop_class_name"]

_IMAGE_CLASS_NAMES = (
    # CT, MR, PET, NM
    "CTImageStorage",
    "EnhancedCTImageStorage",
    "LegacyConvertedEnhancedCTImageStorage",
    "MRImageStorage",
    "EnhancedMRImageStorage",
    "EnhancedMRColorImageStorage",
    "LegacyConvertedEnhancedMRImageStorage",
    "PositronEmissionTomographyImageStorage",
    "EnhancedPETImageStorage",
    "LegacyConvertedEnhancedPETImageStorage",
    "NuclearMedicineImageStorage",
    # projection radiography
    "ComputedRadiographyImageStorage",
    "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing",
    "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForProcessing",
    "DigitalIntraOralXRayImageStorageForPresentation",
    "DigitalIntraOralXRayImageStorageForProcessing",
    "BreastTomosynthesisImageStorage",
    "XRayAngiographicImageStorage",
    "EnhancedXAImageStorage",
    "XRayRadiofluoroscopicImageStorage",
    "EnhancedXRFImageStorage",
    "RTImageStorage",
    # ultrasound
    "UltrasoundImageStorage",
    "UltrasoundMultiFrameImageStorage",
    # secondary capture
    "SecondaryCaptureImageStorage",
    "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage",
    # visible light (endoscopy, dermoscopy, microscopy, fundus)
    "VLEndoscopicImageStorage",
    "VLMicroscopicImageStorage",
    "VLSlideCoordinatesMicroscopicImageStorage",
    "VLPhotographicImageStorage",
    "DermoscopicPhotographyImageStorage",
    "OphthalmicPhotography8BitImageStorage",
    "OphthalmicPhotography16BitImageStorage",
)

#: SOP Class UIDs of the image objects the node accepts.
IMAGE_STORAGE_CLASSES: frozenset[UID] = frozenset(
    UID(getattr(sop_class, name)) for name in _IMAGE_CLASS_NAMES
)


def is_image_storage(uid: str) -> bool:
    """Whether ``uid`` is one of the image storage SOP classes the node segments."""
    return UID(str(uid)) in IMAGE_STORAGE_CLASSES


def sop_class_name(uid: str) -> str:
    """The standard's name of a SOP class (``"RT Plan Storage"``), or the UID itself when unknown."""
    uid = UID(str(uid))
    return uid.name if uid.is_valid else repr(str(uid))


@functools.cache
def _installed_decoders() -> tuple[str, ...]:
    from pydicom.pixels.decoders.base import get_decoder

    usable = []
    for uid in ALL_TRANSFER_SYNTAXES:
        try:
            decoder = get_decoder(UID(uid))
        except NotImplementedError:  # pydicom has no decoder for this syntax at all
            continue
        if decoder.is_available:  # native, or at least one plugin installed
            usable.append(str(uid))
    return tuple(usable)


def decodable_transfer_syntaxes(accept_deflate: bool = False) -> list[str]:
    """The transfer syntaxes whose pixel data this installation can decode, in pynetdicom's order.

    Args:
        accept_deflate: include Deflated Explicit VR Little Endian (the receiver then inflates it
            itself, with a size limit).
    """
    return [uid for uid in _installed_decoders() if accept_deflate or uid != DeflatedExplicitVRLittleEndian]
