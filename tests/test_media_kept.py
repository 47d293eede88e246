"""Downloads kept in memory: the bound a `Keeper` keeps, and bytes given back with their `Held`.

Plain values, no download: how `TempFile` keeps a download under `KEEP` is tested in
test_media_files.py.
"""

from __future__ import annotations

from pathlib import Path

from meigen_async._media_kept import Keeper, Kept


def test_a_keeper_holds_up_to_its_limit_and_refuses_a_reservation_past_it() -> None:
    keeper = Keeper(10)

    assert keeper.reserve(6)
    assert not keeper.reserve(5)
    assert keeper.reserve(4)
    assert keeper.held == 10


def test_a_kept_files_bytes_are_given_back_when_the_last_reference_to_them_goes() -> None:
    keeper = Keeper(10)
    kept = Kept(keeper)
    path = Path("out/i/0.png")
    assert keeper.reserve(6)
    kept.keep(path, [b"abc", b"def"], 6)
    held = kept.files.pop(path)

    assert (held.chunks, held.size, keeper.held) == ((b"abc", b"def"), 6, 6)
    del held
    assert keeper.held == 0
