"""The listening side of the DICOM node: the Storage SCP's AE and its connection-level handlers.

:func:`build_storage_ae` offers every storage SOP class (so a sender pushing a whole study gets a
per-instance answer) with only the transfer syntaxes this installation can decode, and applies the
PDU and association limits. :class:`ConnectionMonitor` bounds how long a peer may stall and logs
connections that never became an association (plain TCP on a TLS port, failed handshakes, scans).
Access control is :mod:`.access`, size guards are :mod:`.limits`, storing is :mod:`.receiver`.
"""

from __future__ import annotations

import logging

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification

from .limits import Limits
from .sop_classes import decodable_transfer_syntaxes

__all__ = ["ConnectionMonitor", "build_storage_ae"]

logger = logging.getLogger(__name__)


def build_storage_ae(ae_title: str, limits: Limits, acse_timeout: float = 30.0) -> AE:
    """The Storage SCP's AE: decodable transfer syntaxes only, limited PDU size and associations.

    Args:
        ae_title: the node's AE title (the called AE title must equal it).
        limits: PDU size, associations and Deflate.
        acse_timeout: seconds a connected peer has to send its A-ASSOCIATE-RQ (and to answer a
            release); until then the connection holds one of ``limits.max_associations``.
    """
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = acse_timeout
    syntaxes = decodable_transfer_syntaxes(limits.accept_deflate)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, syntaxes)
    ae.add_supported_context(Verification)
    ae.maximum_pdu_size = limits.max_pdu
    ae.maximum_associations = limits.max_associations
    ae.require_called_aet = True
    return ae


class ConnectionMonitor:
    """``EVT_CONN_OPEN``/``EVT_CONN_CLOSE`` handlers: a stall timeout, and a log line for non-associations.

    Args:
        stall_timeout: seconds a peer may stall in the middle of a PDU or a TLS handshake.
    """

    def __init__(self, stall_timeout: float) -> None:
        self.stall_timeout = stall_timeout

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_CONN_OPEN, self.on_open), (evt.EVT_CONN_CLOSE, self.on_close)]

    def on_open(self, event: Event) -> None:
        # Accepted sockets block without a timeout: a peer that stops in the middle of a PDU (or of
        # a TLS handshake) would hold its association, and one of --max-associations, for ever.
        sock = getattr(event.assoc.dul.socket, "socket", None)
        if sock is not None:
            sock.settimeout(self.stall_timeout)

    def on_close(self, event: Event) -> None:
        if event.assoc.requestor.primitive is None:  # no A-ASSOCIATE-RQ ever arrived
            logger.warning(
                "Connection from %s:%s closed before any association request (a plain-TCP peer on a TLS "
                "port, a failed TLS handshake, or a port scan)",
                event.assoc.requestor.address,
                event.assoc.requestor.port,
            )
