"""Which storage SOP classes the DICOM node segments.

The node negotiates every storage SOP class that pynetdicom knows, so that a sender pushing a
whole study (images plus dose reports, plans, presentation states) gets a per-instance answer
instead of a failed association. Only the image classes below are stored and segmented; any other
object is refused with the C-STORE status ``0x0122`` (Refused: SOP Class not supported).
"""

from __future__ import annotations

from pydicom.uid import UID
from pynetdicom import sop_class

__all__ = ["IMAGE_STORAGE_CLASSES", "is_image_storage", "sop_class_name"]

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
