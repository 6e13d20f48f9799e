"""The membership core is plain synchronous code: tested here without an event loop."""

from __future__ import annotations

import pytest

from wsrooms._membership import Membership, check_room


def test_join_and_lookups_both_ways() -> None:
    """join registers unknown connections; lookups work both ways and return snapshots."""
    m: Membership[str] = Membership()
    assert m.join("a", "r1")
    assert m.join("a", "r2")
    assert not m.join("a", "r1")
    assert m.join("b", "r1")
    assert m.members("r1") == frozenset({"a", "b"})
    assert m.rooms_of("a") == frozenset({"r1", "r2"})
    assert m.rooms() == frozenset({"r1", "r2"})
    assert m.connections() == frozenset({"a", "b"})
    assert isinstance(m.members("r1"), frozenset)
    snapshot = m.members("r1")
    m.leave("b", "r1")
    assert snapshot == frozenset({"a", "b"})  # a snapshot, not a live view


def test_empty_rooms_are_deleted() -> None:
    """A room that loses its last member disappears (dynamic names do not leak)."""
    m: Membership[str] = Membership()
    for i in range(100):
        m.join("a", f"room-{i}")
    for i in range(100):
        assert m.leave("a", f"room-{i}")
    assert m.rooms() == frozenset()
    assert all(m.fanout(f"room-{i}") == () for i in range(100))


def test_remove_leaves_every_room() -> None:
    """remove forgets the connection and returns every room it left."""
    m: Membership[str] = Membership()
    m.add("idle")
    m.join("a", "x")
    m.join("a", "y")
    m.join("b", "y")
    assert sorted(m.remove("a")) == ["x", "y"]
    assert m.rooms() == frozenset({"y"})
    assert "a" not in m
    assert m.remove("a") == []
    assert m.remove("idle") == []
    assert len(m) == 1


def test_fanout_snapshot_is_cached_until_membership_changes() -> None:
    """The fan-out tuple is reused until the room changes, then rebuilt."""
    m: Membership[str] = Membership()
    m.join("a", "r")
    first = m.fanout("r")
    assert m.fanout("r") is first
    m.join("b", "r")
    assert sorted(m.fanout("r")) == ["a", "b"]
    assert m.fanout("nobody") == ()
    assert not m.leave("c", "r")
    assert not m.leave("a", "other")


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "empty"),
        ("x" * 257, "at most 256"),
        ("a\nb", "control"),
        ("a\x00", "control"),
        ("\x7f", "control"),
        (42, "must be a str"),
        (None, "must be a str"),
    ],
)
def test_invalid_room_names(name: object, rule: str) -> None:
    """Each broken room-name rule is a ValueError that names the rule."""
    with pytest.raises(ValueError, match=rule):
        check_room(name)


@pytest.mark.parametrize("name", ["a", "x" * 256, "chat:general", "é 🎉", "a b"])
def test_valid_room_names(name: str) -> None:
    """Non-empty names of at most 256 characters without control characters are valid."""
    assert check_room(name) == name
