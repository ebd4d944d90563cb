"""The log filter that keeps patient names and IDs out of the DICOM node's logs."""

from __future__ import annotations

import logging
import sys

from pydicom.dataset import Dataset

from litenext_monai.dicom_node import PatientRedactor
from litenext_monai.dicom_node.redact import patient_strings


def _dataset(name: str, patient_id: str) -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID = name, patient_id
    return ds


def test_patient_strings_cover_the_whole_name_and_its_components():
    assert patient_strings(_dataset("Doe^Jane^Q", "MRN-12345")) == {"Doe^Jane^Q", "Doe", "Jane", "MRN-12345"}
    assert patient_strings(Dataset()) == set()


def test_messages_arguments_and_tracebacks_are_redacted():
    redactor = PatientRedactor()
    redactor.add_dataset(_dataset("Doe^Jane^Q", "MRN-12345"))
    try:
        raise ValueError("invalid name Doe^Jane^Q")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "patient %s (%s)", ("MRN-12345", "Jane"), None
        )
        record.exc_info = sys.exc_info()
    assert redactor.filter(record)
    text = record.getMessage()
    assert text.startswith("patient [redacted] ([redacted])")
    assert "ValueError: invalid name [redacted]" in text
    for secret in ("MRN-12345", "Jane", "Doe"):
        assert secret not in text


def test_capacity_forgets_the_least_recently_seen():
    redactor = PatientRedactor(capacity=3)
    redactor.add({"first-id"})
    redactor.add({"second"})
    redactor.add({"third"})
    redactor.add({"first-id"})  # seen again: now the most recent
    redactor.add({"fourth"})
    assert redactor.redact("first-id second third fourth") == "[redacted] second [redacted] [redacted]"
