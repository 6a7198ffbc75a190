"""A MongoDB writer's memory of the rooms it found open: trusted until the closing token moves, and not for long."""

from __future__ import annotations

import pytest

from chat.storage.mongo import closings
from chat.storage.mongo.closings import OPEN_FOR_SECONDS, OpenRooms
from tests.support.clock import FakeClock


def test_rooms_checked_under_a_token_are_known_until_the_token_moves() -> None:
    clock = FakeClock()
    rooms = OpenRooms(clock)
    assert rooms.next_seqs("t1", ["a", "b"]) == {}
    rooms.checked("t1", {"a": 5, "b": 1})
    rooms.wrote({"a": 7})

    assert rooms.next_seqs("t1", ["a", "b", "c"]) == {"a": 7, "b": 1}
    assert rooms.next_seqs("t2", ["a", "b"]) == {}  # some room closed: read them all again
    rooms.checked("t1", {"a": 9})  # read under the old token: not trusted
    assert rooms.next_seqs("t2", ["a"]) == {}


def test_a_room_is_read_again_once_its_check_is_old_whatever_it_wrote_since() -> None:
    clock = FakeClock()
    rooms = OpenRooms(clock)
    rooms.next_seqs("t", ["a"])
    rooms.checked("t", {"a": 1})
    clock.advance(OPEN_FOR_SECONDS - 0.1)
    rooms.wrote({"a": 2})
    assert rooms.next_seqs("t", ["a"]) == {"a": 2}

    clock.advance(0.2)
    assert rooms.next_seqs("t", ["a"]) == {}


def test_it_remembers_the_most_recently_written_rooms_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(closings, "REMEMBERED_ROOMS", 2)
    rooms = OpenRooms(FakeClock())
    rooms.next_seqs("t", ["a", "b"])
    rooms.checked("t", {"a": 1, "b": 1})
    rooms.checked("t", {"a": 2})
    rooms.checked("t", {"c": 1})

    assert rooms.next_seqs("t", ["a", "b", "c"]) == {"a": 2, "c": 1}
