"""The Storage SCU side of the DICOM node: C-STORE a SEG to the destination (over TLS if configured).

Every failure is classified (:attr:`SendError.kind`), so that the node knows what a retry can do:

* ``transient``: the destination cannot be reached, the association is rejected or aborted, no
  response arrives, or the destination answers 0xA7xx "out of resources": retried with capped
  exponential back-off (until ``max_send_hours``);
* ``refused``: any other failure status (0xA9xx data set mismatch, 0xCxxx cannot understand,
  0x0122 SOP class not supported, ...): retried, and failed after ``max_refusals``;
* ``permanent``: the SEG file is unreadable or no Segmentation Storage presentation context was
  accepted: failed at once (a retry sends the same file to the same configuration).

Unusable TLS settings (a missing or unreadable certificate file) are ``transient``: the files are
read again at every send, so a fixed or renewed file is picked up by the next retry.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import SegmentationStorage
from pynetdicom.status import code_to_category

__all__ = [
    "PERMANENT",
    "REFUSED",
    "TRANSIENT",
    "Destination",
    "SendError",
    "classify_status",
    "parse_destination",
    "send_file",
]

TRANSIENT = "transient"
REFUSED = "refused"
PERMANENT = "permanent"

_DESTINATION = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:@]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class Destination:
    """Where SEGs go: the called AE title, host and port of a Storage SCP.

    With ``tls_ca`` the SEG goes over TLS: the destination's certificate must be signed by that CA
    and name ``host``; ``tls_cert``/``tls_key`` are the node's client certificate, if the
    destination asks for one. The files are read at every send, so renewed certificates are used
    without a restart.
    """

    ae_title: str
    host: str
    port: int
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context (``None`` for plain TCP); raises ``ValueError`` naming a bad file."""
        if self.tls_ca is None:
            if self.tls_cert is not None or self.tls_key is not None:
                raise ValueError("--destination-tls-cert/--destination-tls-key need --destination-tls-ca")
            return None
        from .tls import client_context

        return client_context(self.tls_ca, self.tls_cert, self.tls_key)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(
    text: str, tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None
) -> Destination:
    """Parse ``AET@HOST:PORT`` (the TLS files are passed through to :class:`Destination`).

    Raises:
        ValueError: naming the expected form when ``text`` does not match it.
    """
    match = _DESTINATION.match(text.strip())
    port = int(match["port"]) if match else 0
    if not match or not 0 < port < 65536 or match["aet"] != match["aet"].strip():
        raise ValueError(
            f"destination {text!r} is not AET@HOST:PORT (AE title of 1-16 characters without leading or "
            "trailing spaces, port 1-65535)"
        )
    return Destination(match["aet"], match["host"].strip("[]"), port, tls_ca, tls_cert, tls_key)


def classify_status(status: int) -> str | None:
    """``None`` for a stored SEG (success or warning), else the kind of failure of a C-STORE status."""
    if code_to_category(status) in ("Success", "Warning"):
        return None
    if 0xA700 <= status <= 0xA7FF:  # Refused: Out of Resources (a full disk, a busy archive)
        return TRANSIENT
    return REFUSED


class SendError(Exception):
    """A SEG was not stored by the destination.

    ``kind`` is :data:`TRANSIENT`, :data:`REFUSED` or :data:`PERMANENT` (see the module
    docstring); ``refused`` is ``kind == REFUSED``.
    """

    def __init__(self, message: str, refused: bool = False, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind or (REFUSED if refused else TRANSIENT)
        self.refused = self.kind == REFUSED


def send_file(
    path: str | Path, destination: Destination, calling_ae_title: str, timeout: float = 30.0
) -> int:
    """C-STORE one Segmentation Storage file to ``destination``.

    The connection uses TLS when ``destination.tls_ca`` is set (:meth:`Destination.tls_context`).

    Returns:
        The status of the C-STORE response (success, or a warning such as 0xB000 "coercion of data
        elements", which still means stored).

    Raises:
        SendError: when the SEG was not stored, with its :attr:`~SendError.kind`.
    """
    try:
        ds = pydicom.dcmread(str(path))
        if "PixelData" not in ds or str(ds.get("SOPClassUID", "")) != SegmentationStorage:
            raise ValueError("not a Segmentation Storage instance with pixel data")
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for damaged files
        raise SendError(f"the SEG file is unreadable ({type(err).__name__})", kind=PERMANENT) from err
    ae = AE(ae_title=calling_ae_title)
    ae.add_requested_context(SegmentationStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    try:
        context = destination.tls_context()
    except ValueError as err:
        raise SendError(f"TLS settings for {destination}: {err}", kind=TRANSIENT) from err
    tls_args = (context, destination.host) if context is not None else None
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    accepted = any(c.abstract_syntax == SegmentationStorage for c in assoc.accepted_contexts)
    refused_context = any(c.abstract_syntax == SegmentationStorage for c in assoc.rejected_contexts)
    if not accepted and refused_context:
        # pynetdicom aborts an association in which no context was accepted; either way the
        # destination does not take SEGs, and sending again will not change that.
        if assoc.is_established:
            assoc.release()
        raise SendError(
            f"{destination} accepted no presentation context for Segmentation Storage", kind=PERMANENT
        )
    if not assoc.is_established:
        how = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        raise SendError(f"association with {destination} {how}")
    try:
        response = assoc.send_c_store(ds)
    except Exception as err:  # noqa: BLE001 - pynetdicom raises ValueError/RuntimeError/OSError
        assoc.abort()
        raise SendError(f"C-STORE to {destination} failed: {type(err).__name__}: {err}") from err
    status = getattr(response, "Status", None)
    if status is None:
        assoc.abort()
        raise SendError(f"no C-STORE response from {destination} (timeout or aborted association)")
    assoc.release()
    kind = classify_status(int(status))
    if kind is not None:
        raise SendError(f"{destination} answered C-STORE with status 0x{status:04X}", kind=kind)
    return int(status)
