"""The limit helpers are plain arithmetic and string checks: the token bucket behind
`rate_limit`, the `allowed_origins` check (SPEC 1.3), room names (SPEC 2.1) and the
escaping of client strings for logs (SPEC 1.4).

Plain synchronous functions: no event loop needed.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.datastructures import Headers

from wsrooms import InvalidMessage, InvalidRoomName
from wsrooms._limits import (
    TokenBucket,
    check_origins,
    check_rate_limit,
    normalise_origin,
    origin_allowed,
    safe,
)
from wsrooms._membership import check_room

# TokenBucket ------------------------------------------------------------------------------


def test_a_burst_up_to_the_size_passes_then_the_bucket_is_empty() -> None:
    """A full bucket lets `messages` through at once, and not one more."""
    bucket = TokenBucket(5, 1.0)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]


def test_tokens_flow_back_continuously() -> None:
    """After emptying, one token returns every per_seconds/messages seconds."""
    bucket = TokenBucket(4, 2.0)  # one token per 0.5 s
    for _ in range(4):
        assert bucket.take(10.0)
    assert not bucket.take(10.0)
    assert not bucket.take(10.25)
    assert bucket.take(10.5)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


def test_a_bucket_never_holds_more_than_its_size() -> None:
    """A long quiet time refills the bucket to `messages`, not beyond."""
    bucket = TokenBucket(3, 1.0)
    assert bucket.take(0.0)
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_a_steady_sender_at_the_rate_is_never_refused() -> None:
    """Messages spaced exactly at the rate all pass, forever."""
    bucket = TokenBucket(1, 0.1)
    assert all(bucket.take(i * 0.1) for i in range(1000))


def test_a_clock_going_backwards_refills_nothing() -> None:
    """A time earlier than the last one adds no token."""
    bucket = TokenBucket(1, 1.0)
    assert bucket.take(50.0)
    assert not bucket.take(10.0)
    assert not bucket.take(50.5)
    assert bucket.take(51.0)


@pytest.mark.parametrize(
    ("messages", "per_seconds"),
    [
        (0, 1.0),
        (-1, 1.0),
        (1.5, 1.0),
        (True, 1.0),
        ("5", 1.0),
        (5, 0),
        (5, -1.0),
        (5, float("inf")),
        (5, float("nan")),
        (5, "1"),
        (5, None),
        (5, False),
    ],
)
def test_token_bucket_rejects_values_that_cannot_work(messages: Any, per_seconds: Any) -> None:
    """A non-positive, non-finite or wrongly typed value is a ValueError naming it."""
    with pytest.raises(ValueError, match="TokenBucket"):
        TokenBucket(messages, per_seconds)


def test_check_rate_limit() -> None:
    """None passes; a pair becomes (int, float); anything else is a clear ValueError."""
    assert check_rate_limit(None) is None
    assert check_rate_limit((20, 1)) == (20, 1.0)
    assert check_rate_limit([5, 0.5]) == (5, 0.5)
    for bad in (20, (20,), (1, 2, 3), "20/s", (0, 1.0), (5, 0), {"messages": 5}):
        with pytest.raises(ValueError, match=r"Chat\.rate_limit"):
            check_rate_limit(bad, "Chat.rate_limit")


# Origins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "normal"),
    [
        ("https://Example.COM", "https://example.com"),
        ("HTTPS://example.com:8443", "https://example.com:8443"),
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("http://example.com:443", "http://example.com:443"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("http://[::1]:80", "http://[::1]"),
        ("http://[::1]", "http://[::1]"),
        ("null", "null"),
        ("NULL", "null"),
        ("https://example.com/Path", "https://example.com/Path"),
        ("example.com", None),
        ("://example.com", None),
        ("https://", None),
        ("https://:443", None),
        ("http://[::1", None),
        ("http://[::1]x", None),
        ("", None),
    ],
)
def test_normalise_origin(origin: str, normal: str | None) -> None:
    """Scheme and host are lower-cased, a default port dropped, the rest kept as given."""
    assert normalise_origin(origin) == normal


def test_check_origins_normalises_the_list() -> None:
    """None passes; a list becomes a frozenset of normalised origins."""
    assert check_origins(None) is None
    assert check_origins(["https://App.example.com", "null", "http://localhost:8000"]) == frozenset(
        {
            "https://app.example.com",
            "null",
            "http://localhost:8000",
        }
    )
    assert check_origins(()) == frozenset()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("https://example.com", "collection"),
        (b"https://example.com", "collection"),
        (5, "collection"),
        (["*"], "use None"),
        ([5], "must be a str"),
        (["example.com"], "not an origin"),
        (["https://example.com/"], "no path"),
        (["https://example.com/app"], "no path"),
        (["https://user@example.com"], "user name"),
        (["https://example.com?x=1"], "query"),
        (["https://bücher.example"], "punycode"),
    ],
)
def test_check_origins_rejects_what_never_matches(value: Any, says: str) -> None:
    """A lone string, "*", or an entry no browser sends is a ValueError saying what to write."""
    with pytest.raises(ValueError, match=says):
        check_origins(value, "Chat.allowed_origins")


def scope(*origins: bytes) -> dict[str, Any]:
    headers = [(b"host", b"example.com")] + [(b"origin", o) for o in origins]
    return {"type": "websocket", "headers": headers}


ALLOWED = check_origins(["https://app.example.com", "http://localhost:8000"])


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        (scope(), True),  # no Origin header: not a browser
        (scope(b"https://app.example.com"), True),
        (scope(b"HTTPS://APP.EXAMPLE.COM"), True),
        (scope(b"https://app.example.com:443"), True),
        (scope(b"http://localhost:8000"), True),
        (scope(b"http://localhost"), False),
        (scope(b"http://localhost:8001"), False),
        (scope(b"https://evil.example.com"), False),
        (scope(b"https://app.example.com.evil.example"), False),
        (scope(b"http://app.example.com"), False),
        (scope(b"null"), False),  # only if listed
        (scope(b""), False),
        (scope(b"\xff\x00garbage"), False),
        (scope(b"https://app.example.com", b"https://app.example.com"), False),  # several
        (Headers({"origin": "https://app.example.com"}), True),
        (Headers({"Origin": "https://evil.example.com"}), False),
        (Headers({"host": "x"}), True),
        ({"Origin": "https://app.example.com"}, True),
        ({"origin": "https://evil.example"}, False),
        ({}, True),
    ],
)
def test_origin_allowed(source: Any, allowed: bool) -> None:
    """Only a listed origin, or no Origin header at all, is allowed when a list is set."""
    assert origin_allowed(source, ALLOWED) is allowed
    assert origin_allowed(source, None) is True


def test_null_origin_only_if_listed() -> None:
    """The opaque origin "null" (sandboxed frames, file: pages) passes only if listed."""
    assert origin_allowed(scope(b"null"), check_origins(["null"]))
    assert not origin_allowed(scope(b"null"), check_origins(["https://a.example"]))


# Room names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("x" * 257, "at most 256 characters, not 257"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("\x85", "control"),
        ("\x9f", "control"),
        ("\x7f", "control"),
        ("", "empty"),
        (5, "must be a str, not int"),
        (None, "must be a str, not NoneType"),
        (b"room", "must be a str, not bytes"),
    ],
)
def test_invalid_room_names_raise_invalid_room_name(name: object, rule: str) -> None:
    """Each broken rule is an InvalidRoomName (an InvalidMessage and a ValueError) that says
    which rule, with the fixed reason "invalid room name" for the client."""
    with pytest.raises(InvalidRoomName, match=rule) as raised:
        check_room(name)
    assert isinstance(raised.value, InvalidMessage)
    assert isinstance(raised.value, ValueError)
    assert raised.value.reason == "invalid room name"


def test_an_invalid_room_name_is_shown_escaped_and_cut() -> None:
    """The error text shows a broken name only escaped and cut: it is safe to log."""
    with pytest.raises(InvalidRoomName) as raised:
        check_room("evil\n2024-01-01 INFO forged line\x00" + "x" * 10_000)
    detail = str(raised.value)
    assert "\n" not in detail
    assert "\x00" not in detail
    assert "\\n" in detail
    assert len(detail) < 200


# safe -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("/ws/a\x00b", "'/ws/a\\x00b'"),
        ("line\nINFO forged", "'line\\nINFO forged'"),
        ("\x85\u2028\u202e", "'\\x85\\u2028\\u202e'"),
        ("é", "'é'"),
        (5, "5"),
        (b"\xff", "b'\\xff'"),
    ],
)
def test_safe_escapes_control_characters(value: object, shown: str) -> None:
    """safe shows a client string as its repr: no control or invisible character survives."""
    assert safe(value) == shown


def test_safe_cuts_long_values() -> None:
    """Only the first `limit` characters are shown, and how many more there were."""
    assert safe("x" * 1000, limit=10) == "'xxxxxxxxx... (1000 in all)"
    assert safe("\x00" * 8, limit=10) == "'\\x00\\x00\\... (8 in all)"
    assert safe(list(range(1000)), limit=10) == "[0, 1, 2, ..."


def test_safe_survives_a_failing_repr() -> None:
    """An object whose repr raises is shown by its type."""

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert safe(Broken()) == "<unprintable Broken>"
