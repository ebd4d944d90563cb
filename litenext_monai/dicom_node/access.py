"""Who may open an association with the DICOM node: calling AE title *and* peer address.

AE titles are not authenticated (any program can claim to be ``ORTHANC``), so an allow-list of AE
titles alone is no access control. Every rule here pairs an AE title with the addresses it may come
from (``AET@HOST``: an IP address, a CIDR network, or a host name resolved once at start). The
decision is taken when the A-ASSOCIATE-RQ arrives (pynetdicom's ``EVT_REQUESTED``), before any
presentation context is negotiated; a refusal is an A-ASSOCIATE-RJ. The called AE title must be the
node's own. Without rules every association is refused, unless ``allow_any`` is set explicitly.

Every association, accepted or refused, is logged with the peer address and the calling AE title;
nothing of a patient is known at that point, so nothing of a patient can be logged.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pynetdicom import evt
from pynetdicom.events import Event

__all__ = ["AccessPolicy", "AllowRule", "parse_allow"]

logger = logging.getLogger(__name__)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 = rejected-permanent, source 1 = DICOM UL service user.
_REJECT_PERMANENT, _SOURCE_USER = 0x01, 0x01
_CALLING_AET_UNKNOWN, _CALLED_AET_UNKNOWN = 0x03, 0x07


@dataclass(frozen=True)
class AllowRule:
    """One ``AET@HOST`` entry: a calling AE title (``*`` for any) and the networks it may come from."""

    ae_title: str
    networks: tuple[_Network, ...]
    text: str

    def matches(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, calling: str) -> bool:
        if self.ae_title != "*" and calling != self.ae_title:
            return False
        return any(address in network for network in self.networks if network.version == address.version)


def _normalise(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
    return ip


def parse_allow(text: str) -> AllowRule:
    """Parse ``AET@HOST``; a host name is resolved now, to every address it has.

    Raises:
        ValueError: naming the entry when it is malformed or its host name does not resolve.
    """
    aet, sep, host = text.strip().rpartition("@")
    if not sep or not aet or not host or len(aet) > 16 or aet != aet.strip():
        raise ValueError(
            f"--allow {text!r} is not AET@HOST (AE title of 1-16 characters or '*', HOST an IP address, "
            "a CIDR network or a host name)"
        )
    host = host.strip("[]")
    try:
        networks: tuple[_Network, ...] = (ipaddress.ip_network(host, strict=False),)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError as err:
            raise ValueError(f"--allow {text!r}: host name {host!r} does not resolve ({err})") from err
        networks = tuple(sorted({ipaddress.ip_network(_normalise(info[4][0])) for info in infos}, key=str))
    return AllowRule(aet, networks, text.strip())


class AccessPolicy:
    """Decides, for each association request, whether the node talks to the peer.

    Args:
        ae_title: the node's AE title; the called AE title must equal it.
        allow: ``AET@HOST`` strings or parsed :class:`AllowRule` objects.
        allow_any: accept any calling AE title from any address (logged as a warning at start).

    Raises:
        ValueError: when an entry is malformed, or when both ``allow`` and ``allow_any`` are given.
    """

    def __init__(self, ae_title: str, allow: Iterable[str | AllowRule] = (), allow_any: bool = False) -> None:
        self.ae_title = ae_title.strip()
        self.rules: list[AllowRule] = [r if isinstance(r, AllowRule) else parse_allow(r) for r in allow]
        if allow_any and self.rules:
            raise ValueError("--allow-any and --allow exclude each other")
        self.allow_any = allow_any

    def describe(self) -> str:
        """A one-line summary for the start-up log."""
        if self.allow_any:
            return "any AE title from any address (--allow-any)"
        if not self.rules:
            return "nobody (no --allow rule): every association is refused"
        return ", ".join(f"{r.ae_title}@{'|'.join(str(n) for n in r.networks)}" for r in self.rules)

    def check(self, address: str, calling: str, called: str) -> tuple[int, str] | None:
        """``None`` to accept; else the A-ASSOCIATE-RJ diagnostic and a reason for the log."""
        if called.strip() != self.ae_title:
            return _CALLED_AET_UNKNOWN, f"called AE title {called.strip()!r} is not {self.ae_title!r}"
        if self.allow_any:
            return None
        try:
            ip = _normalise(address)
        except ValueError:
            return _CALLING_AET_UNKNOWN, "peer address is not an IP address"
        calling = calling.strip()
        if any(rule.matches(ip, calling) for rule in self.rules):
            return None
        # The same diagnostic either way, so that a stranger cannot learn which AE titles are known;
        # the log tells the operator which part did not match.
        if any(rule.ae_title in ("*", calling) for rule in self.rules):
            return _CALLING_AET_UNKNOWN, "address not allowed for this AE title"
        return _CALLING_AET_UNKNOWN, "calling AE title not allowed"

    # -- pynetdicom ---------------------------------------------------------------------------------
    def handlers(self) -> list[tuple]:
        """The ``evt_handlers`` that enforce the policy and log every association."""
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
        ]

    @staticmethod
    def _peer(event: Event) -> tuple[str, str, str]:
        requestor = event.assoc.requestor
        primitive = requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "")
        called = str(getattr(primitive, "called_ae_title", "") or "")
        return f"{requestor.address}:{requestor.port}", calling, called

    def on_requested(self, event: Event) -> None:
        peer, calling, called = self._peer(event)
        refusal = self.check(str(event.assoc.requestor.address), calling, called)
        if refusal is None:
            return
        diagnostic, reason = refusal
        logger.warning("Association from %s calling %r refused: %s", peer, calling.strip(), reason)
        event.assoc.acse.send_reject(_REJECT_PERMANENT, _SOURCE_USER, diagnostic)
        event.assoc.kill()

    def on_accepted(self, event: Event) -> None:
        peer, calling, _ = self._peer(event)
        assoc = event.assoc
        logger.info(
            "Association from %s calling %r accepted (%d presentation contexts accepted, %d rejected)",
            peer,
            calling.strip(),
            len(assoc.accepted_contexts),
            len(assoc.rejected_contexts),
        )

    def on_rejected(self, event: Event) -> None:
        """pynetdicom's own rejections (too many associations)."""
        peer, calling, _ = self._peer(event)
        primitive = event.assoc.acceptor.primitive
        transient = getattr(primitive, "result", None) == 0x02
        reason = "too many associations" if transient else "rejected by pynetdicom"
        logger.warning("Association from %s calling %r refused: %s", peer, calling.strip(), reason)
