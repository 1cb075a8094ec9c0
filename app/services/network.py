"""What went wrong on the wire, in words a user can act on, and which URLs may be fetched.

``aiohttp`` names a failure by its class (``ClientConnectorError``) and buries the cause in
``os_error``; a user needs "connection refused by api.github.com:443" or "DNS lookup of
api.github.com failed". Pure: it reads exceptions and URLs, never touches the network.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl

import aiohttp
from yarl import URL

__all__ = ["describe_transport_error", "is_fetchable"]

_LOOPBACK_NAMES = frozenset({"localhost"})


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_fetchable(url: URL) -> bool:
    """True for an https URL with a host, or a plain http one to a loopback address.

    Loopback http is what a local proxy or a test's fake server is; anything else that is not
    https (``file:``, ``ftp:``, http to another host) is never fetched.
    """
    if not url.host:
        return False
    if url.scheme == "https":
        return True
    return url.scheme == "http" and _is_loopback(url.host)


def _endpoint(error: aiohttp.ClientConnectorError) -> str:
    return f"{error.host}:{error.port}"


def _connector_cause(error: aiohttp.ClientConnectorError) -> str:  # noqa: PLR0911 - one per cause
    cause = error.os_error
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {_endpoint(error)} not trusted ({error.certificate_error})"
    if isinstance(error, aiohttp.ClientSSLError) or isinstance(cause, ssl.SSLError):
        reason = getattr(cause, "reason", None) or cause
        return f"TLS handshake with {_endpoint(error)} failed ({reason})"
    if isinstance(cause, socket.gaierror):
        return f"DNS lookup of {error.host} failed ({cause.strerror or cause})"
    if isinstance(cause, ConnectionRefusedError) or cause.errno == errno.ECONNREFUSED:
        return f"connection refused by {_endpoint(error)}"
    if isinstance(cause, TimeoutError):
        return f"connecting to {_endpoint(error)} timed out"
    if cause.errno in {errno.ENETUNREACH, errno.EHOSTUNREACH}:
        return f"{_endpoint(error)} is unreachable ({cause.strerror})"
    return f"cannot connect to {_endpoint(error)} ({cause.strerror or cause})"


def describe_transport_error(error: BaseException) -> str:  # noqa: PLR0911 - one per cause
    """The cause of a failed request, for a log line: refused, DNS, timeout, TLS, cut off."""
    if isinstance(error, aiohttp.ClientConnectorError):
        return _connector_cause(error)
    if isinstance(error, aiohttp.ServerTimeoutError | TimeoutError):
        return "timed out waiting for the server"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the answer's body was cut off"
    if isinstance(error, ConnectionResetError):
        return "the connection was reset"
    if isinstance(error, aiohttp.ClientOSError):
        return f"connection failed ({error.strerror or error})"
    if isinstance(error, aiohttp.InvalidURL):
        return "the URL is not one that can be fetched"
    return type(error).__name__
