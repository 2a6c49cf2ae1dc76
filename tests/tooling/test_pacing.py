"""The paced publisher's clock, on a fake clock: chunks in order, each due on a fixed schedule."""

from __future__ import annotations

import pytest

from cidsync_tooling import pacing


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def perf_counter(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.slept.append(round(delay, 6))
        self.now += delay


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr("cidsync_tooling.pacing.time.perf_counter", fake.perf_counter)
    monkeypatch.setattr("cidsync_tooling.pacing.asyncio.sleep", fake.sleep)
    return fake


async def test_chunks_come_in_order_each_due_on_a_fixed_schedule(clock: FakeClock) -> None:
    handed: list[tuple[float, list[int]]] = []
    async for chunk in pacing.paced(list(range(7)), rate=10, chunk=3):
        handed.append((round(clock.now - 100.0, 6), list(chunk)))
    assert handed == [(0.0, [0, 1, 2]), (0.3, [3, 4, 5]), (0.6, [6])]


async def test_a_slow_consumer_is_caught_up_not_slowed_down(clock: FakeClock) -> None:
    async for chunk in pacing.paced(list(range(4)), rate=2):
        if chunk[0] == 1:
            clock.now += 1.2  # sending the second item took longer than its share
    # Items due at 0, 0.5, 1.0, 1.5: after the slow one (done at 1.7) the next two are late: no sleep.
    assert clock.slept == [0.5]


async def test_rate_zero_never_waits(clock: FakeClock) -> None:
    assert [list(c) async for c in pacing.paced([1, 2, 3], rate=0, chunk=2)] == [[1, 2], [3]]
    assert clock.slept == []


async def test_bad_arguments_are_refused_and_a_chunk_is_at_least_one_item() -> None:
    for rate, chunk in ((-1.0, 1), (1.0, 0)):
        with pytest.raises(ValueError, match="rate must be 0 or more and chunk 1 or more"):
            _ = [c async for c in pacing.paced([1], rate=rate, chunk=chunk)]
    assert (pacing.chunk_for(5), pacing.chunk_for(250), pacing.chunk_for(250, per_second=100)) == (1, 25, 2)
