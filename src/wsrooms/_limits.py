"""The limits a public server needs, as plain synchronous code: no I/O, no event loop.

The endpoint asks these helpers; they know no socket. `TokenBucket` meters a client's
messages (`rate_limit`), `origin_allowed` checks a handshake's `Origin` header
(`allowed_origins`, the defence against cross-site WebSocket hijacking), and `safe` escapes
any client-supplied string before it reaches a log line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "TokenBucket",
    "check_origins",
    "check_rate_limit",
    "normalise_origin",
    "origin_allowed",
    "safe",
]

_ONE_TOKEN = 1.0 - 1e-9
# Default ports that a browser never writes in an `Origin` header.
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def safe(text: object, limit: int = 200) -> str:
    """The escaped, cut form of a client-supplied value, for a log line.

    `repr` escapes control characters (`\\n`, `\\x00`, `\\x85`, ...) and other
    unprintable ones, so a client cannot end a log line early or forge one. The result
    is at most `limit` characters of that `repr` plus a short note of the full length:
    only the head of a long string is ever escaped, so a megabyte costs nothing.

    Args:
        text: A path, room name, reason or any other value that came from a client.
        limit: How many characters of the `repr` to keep.

    Returns:
        A printable one-line string.
    """
    if isinstance(text, str | bytes | bytearray):
        # Escaping the head is enough: no character escapes to more than 10.
        shown = repr(text[:limit])
        if len(text) <= limit and len(shown) <= limit + 2:
            return shown
        return f"{shown[:limit]}... ({len(text)} in all)"
    try:
        shown = repr(text)
    except Exception:
        return f"<unprintable {type(text).__name__}>"
    return shown if len(shown) <= limit + 2 else f"{shown[:limit]}..."


class TokenBucket:
    """A token bucket: bursts of up to `messages` pass, refilled at `messages/per_seconds`.

    The bucket starts full. Each `take` costs one token; tokens flow back continuously,
    up to `messages`. Time comes from the caller (`anyio.current_time()` in the
    endpoint), so the bucket is plain arithmetic and tests need no clock.

    Args:
        messages: The burst size and the number of messages per window, an int >= 1.
        per_seconds: The window in seconds, a finite number > 0.

    Raises:
        ValueError: A value that cannot work.
    """

    __slots__ = ("_capacity", "_last", "_rate", "_tokens")

    def __init__(self, messages: int, per_seconds: float) -> None:
        messages, per_seconds = _check_pair(messages, per_seconds, "TokenBucket")
        self._capacity = float(messages)
        self._rate = messages / per_seconds
        self._tokens = float(messages)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """Take one token at time `now` (seconds, monotonic); false if none is left."""
        last = self._last
        if last is not None and now > last:
            self._tokens = min(self._capacity, self._tokens + (now - last) * self._rate)
        if last is None or now > last:
            self._last = now
        # The tolerance keeps float rounding from refusing a client that sends at exactly
        # the rate (0.1 s apart at 10/s refills 0.9999999999999998 tokens).
        if self._tokens >= _ONE_TOKEN:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False


def _check_pair(messages: object, per_seconds: object, name: str) -> tuple[int, float]:
    if not isinstance(messages, int) or isinstance(messages, bool) or messages < 1:
        raise ValueError(f"{name}: messages must be an int >= 1, not {safe(messages, 40)}")
    if (
        not isinstance(per_seconds, int | float)
        or isinstance(per_seconds, bool)
        or not 0 < per_seconds < math.inf
    ):
        raise ValueError(
            f"{name}: per_seconds must be a finite number > 0, not {safe(per_seconds, 40)}"
        )
    return messages, float(per_seconds)


def check_rate_limit(value: object, name: str = "rate_limit") -> tuple[int, float] | None:
    """Validate a `rate_limit` setting: `None`, or a pair `(messages, per_seconds)`.

    Args:
        value: The setting.
        name: How to name it in the error, e.g. `"Chat.rate_limit"`.

    Returns:
        `None`, or `(messages, per_seconds)` as `(int, float)`.

    Raises:
        ValueError: Anything else, saying what was expected.
    """
    if value is None:
        return None
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(
            f"{name} must be None or a pair (messages, per_seconds), e.g. (20, 1.0),"
            f" not {safe(value, 80)}"
        )
    return _check_pair(value[0], value[1], name)


def normalise_origin(origin: str) -> str | None:
    """The form in which origins are compared, or `None` if `origin` is not one.

    `"null"` stays `"null"`. Otherwise `scheme://host[:port]`: scheme and host are
    lower-cased, a default port (80 for http/ws, 443 for https/wss) is dropped, as
    browsers never send it, and the rest is kept exactly as given.
    """
    if origin.lower() == "null":
        return "null"
    scheme, sep, rest = origin.partition("://")
    if not sep or not scheme or not rest:
        return None
    authority, slash, path = rest.partition("/")
    if authority.startswith("["):  # an IPv6 literal: [::1]:8000
        end = authority.find("]")
        if end < 0:
            return None
        host, port = authority[: end + 1], authority[end + 1 :]
        if port and not port.startswith(":"):
            return None
        port = port[1:]
        colon = ":" if port else ""
    else:
        host, colon, port = authority.partition(":")
    if not host:
        return None
    scheme = scheme.lower()
    if colon and port == _DEFAULT_PORTS.get(scheme):
        colon = port = ""
    return f"{scheme}://{host.lower()}{colon}{port}{slash}{path}"


def check_origins(value: object, name: str = "allowed_origins") -> frozenset[str] | None:
    """Validate and normalise an `allowed_origins` setting.

    Args:
        value: `None` (any origin), or an iterable of origins such as
            `"https://example.com"`, `"http://localhost:8000"` or `"null"`.
        name: How to name it in the error, e.g. `"Chat.allowed_origins"`.

    Returns:
        `None`, or the origins in the form `normalise_origin` gives.

    Raises:
        ValueError: A single string instead of a collection, `"*"`, or an entry that
            cannot be the `Origin` of a browser (no scheme, a path, a user name, ...).
    """
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(
            f"{name} must be None or a collection of origins, e.g."
            f' ("https://example.com",), not {safe(value, 80)}'
        )
    origins: set[str] = set()
    for entry in value:
        if entry == "*":
            raise ValueError(f"{name}: use None to accept any origin, not '*'")
        if not isinstance(entry, str):
            raise ValueError(f"{name}: an origin must be a str, not {safe(entry, 80)}")
        normal = normalise_origin(entry)
        if normal is None:
            raise ValueError(
                f"{name}: {entry!r} is not an origin: write scheme://host[:port],"
                ' e.g. "https://example.com", or "null"'
            )
        rest = normal.partition("://")[2]
        if normal != "null" and any(c in rest for c in "/?#@"):
            raise ValueError(
                f"{name}: {entry!r} is not an origin: an Origin header has no path,"
                " query or user name (no trailing slash either)"
            )
        if not rest.isascii():
            raise ValueError(
                f"{name}: {entry!r}: write an internationalised host in its ASCII"
                " (punycode) form, as browsers send it"
            )
        origins.add(normal)
    return frozenset(origins)


def _origin_headers(source: Mapping[str, Any]) -> list[str]:
    """The values of the `Origin` headers of an ASGI scope or of a header mapping."""
    if "type" in source and "headers" in source:  # an ASGI scope
        return [
            value.decode("latin-1") for key, value in source["headers"] if key.lower() == b"origin"
        ]
    getlist = getattr(source, "getlist", None)
    if getlist is not None:  # starlette.datastructures.Headers: every value
        return list(getlist("origin"))
    return [str(value) for key, value in source.items() if str(key).lower() == "origin"]


def origin_allowed(headers_or_scope: Mapping[str, Any], allowed: frozenset[str] | None) -> bool:
    """Whether a handshake may go on, judged by its `Origin` header.

    See `BaseWSEndpoint.allowed_origins`.

    Args:
        headers_or_scope: The ASGI scope of the handshake, or its headers (Starlette's
            `Headers`, or any mapping from header names to values).
        allowed: What `check_origins` returned: `None` accepts any origin.

    Returns:
        True if `allowed` is `None`, if there is no `Origin` header (not a browser), or
        if the origin, normalised as `normalise_origin` does, is in `allowed`
        (`"null"` only if listed). False otherwise, and for several `Origin` headers.
    """
    if allowed is None:
        return True
    origins = _origin_headers(headers_or_scope)
    if not origins:
        return True
    if len(origins) > 1:  # a browser sends one at most
        return False
    normal = normalise_origin(origins[0])
    return normal is not None and normal in allowed
