"""Keep patient names and IDs out of the DICOM node's logs.

The node itself only ever logs UIDs, AE titles, counts and reasons. Libraries it calls may not be
so careful: pydicom warns with the offending value when an element does not fit its VR, and
highdicom's errors quote invalid attribute values. :class:`PatientRedactor` is a logging filter
that knows the Patient's Name and Patient ID of every instance the node has seen and replaces them
in any record (message, arguments and traceback) before a handler writes it.

The same filter escapes control characters (``\n``, ``\r``, ESC, ...) in every record, so that a
hostile value (a UID or AE title with a line break) cannot forge log lines: one record is one line.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

__all__ = ["PatientRedactor", "configure_node_logging", "escape_control", "patient_strings"]

REDACTED = "[redacted]"
# Shorter values ("1", "AB") would redact unrelated text everywhere; the node never logs them.
_MIN_LENGTH = 3
_PATIENT_TAGS = (0x00100010, 0x00100020)  # PatientName, PatientID
# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match) -> str:
    char = match.group()
    return _NAMED_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape (``"a\\nb"`` → ``"a\\\\nb"``)."""
    return _CONTROL.sub(_escape_char, text)


def patient_strings(ds: Dataset) -> set[str]:
    """Patient's Name (whole and by component) and Patient ID of ``ds`` as plain strings.

    Reads the raw element values, so that no pydicom validation (which would itself warn with
    the value) runs.
    """
    found: set[str] = set()
    for tag in _PATIENT_TAGS:
        try:
            elem = ds.get_item(tag)
        except Exception:  # noqa: BLE001 - an unreadable element has nothing to redact
            continue
        if elem is None or elem.value is None:
            continue
        value = elem.value
        if isinstance(value, bytes):
            text = value.decode("utf-8", "replace")
            texts = {text, value.decode("latin-1")}
        else:
            texts = {str(value)}
        for text in texts:
            text = text.strip(" \x00")
            found.add(text)
            for part in text.replace("=", "^").split("^"):
                found.add(part.strip())
    return {s for s in found if len(s) >= _MIN_LENGTH}


class PatientRedactor(logging.Filter):
    """A logging filter that replaces known patient names and IDs with ``[redacted]``.

    Attach it to the handlers (not the loggers), so that records of every library pass through it.

    Args:
        capacity: how many strings are remembered; the least recently seen are forgotten first,
            which bounds memory and the cost per record of a node that runs for months.
    """

    def __init__(self, capacity: int = 20000) -> None:
        super().__init__()
        self.capacity = capacity
        self._lock = threading.Lock()
        self._recent: dict[str, None] = {}
        self._strings: tuple[str, ...] = ()

    def add_dataset(self, ds: Dataset) -> None:
        """Remember the patient strings of ``ds``."""
        self.add(patient_strings(ds))

    def add_file(self, path: str | Path) -> None:
        """Remember the patient strings of a DICOM file (unreadable files are ignored)."""
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientName", "PatientID"])
        except Exception:  # noqa: BLE001 - nothing to redact from a file nobody can read
            return
        self.add_dataset(ds)

    def add(self, strings: set[str]) -> None:
        with self._lock:
            changed = False
            for value in strings:
                changed |= value not in self._recent
                self._recent.pop(value, None)
                self._recent[value] = None  # most recent last
            while len(self._recent) > self.capacity:
                del self._recent[next(iter(self._recent))]
                changed = True
            if changed:
                # Longest first, so that a whole name is replaced before its components.
                self._strings = tuple(sorted(self._recent, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for value in self._strings:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact patient strings and escape control characters; the record becomes one line."""
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = None
            record.exc_text = None
        if record.stack_info:
            message += "\n" + record.stack_info
            record.stack_info = None
        record.msg = escape_control(self.redact(message))
        record.args = None
        return True


def configure_node_logging(level: int = logging.INFO, stream=None) -> PatientRedactor:
    """Log to ``stream`` (stderr) through a :class:`PatientRedactor`, warnings included.

    pynetdicom's and highdicom's own chatter is limited to warnings and errors.

    Returns:
        The redactor, to be handed to :class:`~litenext_monai.dicom_node.DicomNode`.
    """
    redactor = PatientRedactor()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in ("pynetdicom", "highdicom"):  # per-PDU and per-module messages
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)
    return redactor
