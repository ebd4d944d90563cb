"""Readers and writers for 2D images, NIfTI and DICOM."""

from __future__ import annotations
