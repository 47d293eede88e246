"""When a failing backend is tried again (pure, with a fake clock)."""

from __future__ import annotations

from clocks import FakeTimer

from meigen_async._backoff import Backoff


def test_a_failure_skips_the_backend_for_half_a_second(timer: FakeTimer) -> None:
    backoff = Backoff(timer=timer)
    assert backoff.failed() is True
    timer.now += 0.49
    assert not backoff.ready()
    timer.now += 0.01
    assert backoff.ready()


def test_each_failed_retry_doubles_the_back_off_up_to_five_seconds(timer: FakeTimer) -> None:
    backoff = Backoff(timer=timer)
    delays = []
    for _ in range(7):
        backoff.failed()
        delays.append(backoff.delay)
        timer.now += backoff.delay
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_failures_of_operations_sent_together_count_as_one(timer: FakeTimer) -> None:
    backoff = Backoff(timer=timer)
    assert [backoff.failed() for _ in range(5)] == [True, False, False, False, False]
    assert backoff.delay == 0.5


def test_a_success_ends_the_outage_once(timer: FakeTimer) -> None:
    backoff = Backoff(timer=timer)
    backoff.failed()
    timer.now += 1
    assert backoff.succeeded(started=timer.now) is True
    assert backoff.succeeded(started=timer.now) is False
    assert backoff.ready()
    assert not backoff.down


def test_a_success_of_an_operation_sent_before_the_outage_does_not_end_it(timer: FakeTimer) -> None:
    backoff = Backoff(timer=timer)
    sent = timer.now
    timer.now += 0.1
    backoff.failed()
    assert backoff.succeeded(started=sent) is False
    assert backoff.down


def test_the_end_of_an_outage_tells_its_failures_and_length(timer: FakeTimer) -> None:
    backoff = Backoff(timer=timer)
    began = timer.now
    backoff.failed()
    for _ in range(3):
        timer.now += backoff.delay
        backoff.failed()
    timer.now += backoff.delay
    assert backoff.succeeded(timer.now) is True
    assert backoff.outage == (4, timer.now - began)
