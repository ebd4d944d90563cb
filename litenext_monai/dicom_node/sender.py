"""The Storage SCU side of the DICOM node: C-STORE a SEG to the destination (over TLS if configured)."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import SegmentationStorage
from pynetdicom.status import code_to_category

__all__ = ["Destination", "SendError", "parse_destination", "send_file"]

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


class SendError(Exception):
    """A SEG was not stored by the destination.

    ``refused`` is True when the destination answered with a failure status (sending the same
    file again is unlikely to help); False when it could not be reached or the association failed.
    """

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def send_file(
    path: str | Path, destination: Destination, calling_ae_title: str, timeout: float = 30.0
) -> int:
    """C-STORE one Segmentation Storage file to ``destination``.

    The connection uses TLS when ``destination.tls_ca`` is set (:meth:`Destination.tls_context`).

    Returns:
        The status of the C-STORE response (success, or a warning such as 0xB000 "coercion of data
        elements", which still means stored).

    Raises:
        SendError: when the SEG was not stored.
    """
    ae = AE(ae_title=calling_ae_title)
    ae.add_requested_context(SegmentationStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    try:
        context = destination.tls_context()
    except ValueError as err:
        raise SendError(f"TLS settings for {destination}: {err}") from err
    tls_args = (context, destination.host) if context is not None else None
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        how = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        raise SendError(f"association with {destination} {how}")
    try:
        response = assoc.send_c_store(Path(path))
    except Exception as err:  # noqa: BLE001 - pynetdicom raises ValueError/RuntimeError/OSError
        assoc.abort()
        raise SendError(f"C-STORE to {destination} failed: {type(err).__name__}: {err}") from err
    status = getattr(response, "Status", None)
    if status is None:
        assoc.abort()
        raise SendError(f"no C-STORE response from {destination} (timeout or aborted association)")
    assoc.release()
    if code_to_category(status) not in ("Success", "Warning"):
        raise SendError(f"{destination} answered C-STORE with status 0x{status:04X}", refused=True)
    return int(status)
