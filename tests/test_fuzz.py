"""Fuzzing what a client controls (SPEC 1.4): every frame decodes to the handler's data or to
a close code of 1003, 1007 or 1009, never to another exception; every room name is valid
or an `InvalidRoomName`; every origin check and log escape is total.

Bounded: a few hundred examples per property, no deadline (a loaded machine must not make
them flaky), so the whole module runs in a few seconds.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsrooms import InvalidRoomName
from wsrooms._codec import MAX_JSON_DEPTH, Rejected, decode, dumps, loads
from wsrooms._limits import TokenBucket, check_origins, origin_allowed, safe
from wsrooms._membership import MAX_ROOM_NAME, check_room

BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON-looking input: real documents (NaN and Infinity included), and fragments built
# from JSON's own characters, so the parser's and the depth scan's edges are reached.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
json_texts = json_values.map(json.dumps)
json_soup = st.text(alphabet='[]{}",:\\ 0123456789.eE+-tfnuNIaly\x00\n\x85éud8', max_size=600)
deep = st.builds(
    lambda depth, opener, inner: opener * depth + inner + {"[": "]", '{"a":': "}"}[opener] * depth,
    st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 3),
    st.sampled_from(["[", '{"a":']),
    st.sampled_from(["1", "[]", "NaN", '"]]]"', ""]),
)
any_text = json_texts | json_soup | deep | st.text(max_size=200)
any_bytes = (
    any_text.map(lambda t: t.encode("utf-8"))
    | st.binary(max_size=200)
    | any_text.map(lambda t: t.encode("utf-16"))
)

frames = st.one_of(
    any_text.map(lambda t: {"type": "websocket.receive", "text": t}),
    any_bytes.map(lambda b: {"type": "websocket.receive", "bytes": b}),
    any_bytes.map(lambda b: {"type": "websocket.receive", "text": None, "bytes": b}),
    st.just({"type": "websocket.receive"}),
)
encodings = st.sampled_from(["json", "text", "bytes", None])
sizes = st.sampled_from([0, 1, 16, 100, 1 << 20])


def failing_loads(data: str | bytes) -> Any:
    # A user's codec with a bug of its own: client input must still not make it a 1011.
    if len(data) % 3 == 0:
        raise KeyError("boom")
    if len(data) % 3 == 1:
        raise RecursionError
    return json.loads(data)


user_codecs = st.sampled_from([loads, json.loads, failing_loads])


@BOUNDED
@given(message=frames, encoding=encodings, max_size=sizes, codec=user_codecs)
def test_decode_gives_data_or_a_close_code(
    message: dict[str, Any], encoding: Any, max_size: int, codec: Any
) -> None:
    """Any frame, any encoding, any codec: data, or Rejected with 1003, 1007 or 1009."""
    try:
        data = decode(message, encoding, codec, max_size)
    except Rejected as exc:
        rejected: tuple[int, str] | None = (exc.code, exc.reason)
    else:
        rejected = None
    if rejected is not None:
        assert rejected in {
            (1009, "message too big"),
            (1003, "binary frames expected"),
            (1003, "text frames expected"),
            (1007, "invalid JSON"),
        }
        return
    payload = message.get("text")
    if payload is None:
        payload = message.get("bytes") or b""
    assert len(payload) <= max_size
    if encoding is None:
        assert data is message
    elif encoding == "text":
        assert data == payload
    elif encoding == "bytes":
        assert data == payload
        assert isinstance(data, bytes)


@BOUNDED
@given(message=frames)
def test_what_the_default_codec_accepts_can_be_relayed(message: dict[str, Any]) -> None:
    """JSON that the default codec accepts is what the stdlib reads, and dumps writes it
    again as UTF-8 text: no NaN, no Infinity, no lone surrogate reaches other members."""
    try:
        data = decode(message, "json", loads, 1 << 20)
    except Rejected as exc:
        code: int | None = exc.code
    else:
        code = None
    if code is not None:
        assert code in {1007, 1009}
        return
    payload = message.get("text")
    if payload is None:
        payload = message.get("bytes") or b""
    assert json.loads(payload) == data
    relayed = dumps(data)
    relayed.encode("utf-8")
    assert json.loads(relayed) == data


@BOUNDED
@given(value=json_values)
def test_the_default_codec_round_trips_finite_json(value: Any) -> None:
    """Every finite JSON value survives dumps then loads; a non-finite one is refused."""
    try:
        text = dumps(value)
    except ValueError:
        return  # NaN or Infinity somewhere: refused at the source
    assert loads(text) == value
    assert loads(text.encode("utf-8")) == value


room_names = st.one_of(
    st.text(max_size=MAX_ROOM_NAME + 10),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=250, max_size=260),
    st.text(alphabet="ab\x00\n\x1f\x7f\x85\x9f\u2028é", max_size=20),
    st.integers(),
    st.none(),
    st.binary(max_size=10),
    st.lists(st.text(max_size=3), max_size=2),
)


@BOUNDED
@given(name=room_names)
def test_room_names_are_valid_or_invalid_room_name(name: object) -> None:
    """check_room returns exactly the valid names and raises InvalidRoomName for the rest."""
    valid = (
        isinstance(name, str)
        and 1 <= len(name) <= MAX_ROOM_NAME
        and not any(unicodedata.category(c) == "Cc" for c in name)
    )
    try:
        returned = check_room(name)
    except InvalidRoomName as exc:
        error: InvalidRoomName | None = exc
    else:
        error = None
    if error is None:
        assert valid
        assert returned is name
    else:
        assert not valid
        assert error.reason == "invalid room name"
        assert "\n" not in str(error)
        assert len(str(error)) < 200


@BOUNDED
@given(value=st.one_of(st.text(), st.binary(), st.integers(), st.lists(st.text(max_size=5))))
def test_safe_output_is_one_printable_line(value: object) -> None:
    """safe never lets a control character or a newline through, and stays short."""
    shown = safe(value, limit=50)
    assert all(unicodedata.category(c) not in {"Cc", "Zl", "Zp"} for c in shown)
    assert len(shown) <= 50 + 30


ALLOWED = check_origins(["https://app.example.com", "null"])


@BOUNDED
@given(
    origins=st.lists(
        st.binary(max_size=60) | st.sampled_from([b"null", b"https://app.example.com"]), max_size=3
    )
)
def test_origin_allowed_is_total(origins: list[bytes]) -> None:
    """Any Origin header bytes give a yes or a no, never an exception."""
    scope = {"type": "websocket", "headers": [(b"origin", o) for o in origins]}
    result = origin_allowed(scope, ALLOWED)
    assert isinstance(result, bool)
    if not origins:
        assert result  # no Origin header: not a browser
    elif len(origins) > 1:
        assert not result
    elif origins[0] in {b"null", b"https://app.example.com"}:
        assert result


@BOUNDED
@given(
    messages=st.integers(1, 20),
    per_seconds=st.floats(0.01, 10),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200),
)
def test_token_bucket_never_passes_more_than_the_rate(
    messages: int, per_seconds: float, gaps: list[float]
) -> None:
    """Over any stretch of time t, at most messages + t * rate takes pass."""
    bucket = TokenBucket(messages, per_seconds)
    rate = messages / per_seconds
    now = 0.0
    passed: list[float] = []
    for gap in gaps:
        now += gap
        if bucket.take(now):
            passed.append(now)
    for i, start in enumerate(passed):
        for j in range(i, len(passed)):
            window = passed[j] - start
            assert j - i + 1 <= messages + window * rate + 1e-6
