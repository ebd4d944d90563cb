"""DICOM over TLS (PS3.15 Annex B.9 secure transport) for the node's port and for the destination.

With a certificate and key the node's port is a TLS port: a plain-TCP peer fails the handshake and
never reaches the DICOM layer. With a CA as well, peers must present a client certificate signed by
that CA (mutual TLS), which authenticates the machine behind a calling AE title.

The handshake of an incoming connection is done on the association's own thread, not on the
thread that accepts connections (pynetdicom would do it there, so one peer that connects and sends
nothing would block every other peer): see :class:`_DeferredHandshakeContext`.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["client_context", "server_context"]


class _DeferredHandshakeContext(ssl.SSLContext):
    """An ``SSLContext`` whose server sockets do their handshake on first read, not on accept.

    pynetdicom wraps each accepted socket on its single accept thread with the default
    ``do_handshake_on_connect=True``; the handshake then blocks that thread for as long as the peer
    likes. Deferring it moves it to the association's thread (OpenSSL completes the handshake inside
    the first ``recv``), where the node's network timeout applies.
    """

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, **kwargs):  # noqa: D102
        if server_side:
            do_handshake_on_connect = False
        return super().wrap_socket(
            sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect, **kwargs
        )


def _check_files(**paths: str | Path | None) -> None:
    for flag, path in paths.items():
        if path is not None and not Path(path).is_file():
            raise ValueError(f"--{flag.replace('_', '-')} {path}: no such file")


def server_context(cert: str | Path, key: str | Path, ca: str | Path | None = None) -> ssl.SSLContext:
    """The TLS context of the node's listening port (TLS 1.2 or newer).

    Args:
        cert: PEM certificate (chain) of the node.
        key: PEM private key of ``cert``.
        ca: PEM CA certificate(s); when given, every peer must present a certificate signed by one
            of them.

    Raises:
        ValueError: naming the file that is missing or unusable.
    """
    _check_files(tls_cert=cert, tls_key=key, tls_ca=ca)
    context = _DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as err:
        raise ValueError(f"--tls-cert {cert} / --tls-key {key}: cannot be loaded ({err})") from err
    if ca is not None:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as err:
            raise ValueError(f"--tls-ca {ca}: cannot be loaded ({err})") from err
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca: str | Path, cert: str | Path | None = None, key: str | Path | None = None
) -> ssl.SSLContext:
    """The TLS context for sending to the destination: its certificate must be signed by ``ca``.

    The destination's host name (or IP address) is checked against its certificate. ``cert`` and
    ``key`` are the node's client certificate, for destinations that require one.

    Raises:
        ValueError: naming the file that is missing or unusable.
    """
    _check_files(destination_tls_ca=ca, destination_tls_cert=cert, destination_tls_key=key)
    if (cert is None) != (key is None):
        raise ValueError("--destination-tls-cert and --destination-tls-key go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as err:
        raise ValueError(f"--destination-tls-ca {ca}: cannot be loaded ({err})") from err
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError) as err:
            raise ValueError(
                f"--destination-tls-cert {cert} / --destination-tls-key {key}: cannot be loaded ({err})"
            ) from err
    return context
