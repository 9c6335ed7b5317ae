"""Coalescing slider values: one request in flight per key, only the newest value waits."""

from __future__ import annotations

from dataclasses import dataclass, field

from occupancy_addon.coalesce import Coalescer


@dataclass
class FakeJob:
    value: float
    finished: bool = False


@dataclass
class Recorder:
    sent: list[tuple[str, float]] = field(default_factory=list)
    applied: list[tuple[str, float]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    jobs: list[FakeJob] = field(default_factory=list)
    fail_on: float | None = None

    def send(self, key: str, value: float) -> FakeJob:
        if value == self.fail_on:
            raise RuntimeError(f"cannot send {value}")
        self.sent.append((key, value))
        job = FakeJob(value)
        self.jobs.append(job)
        return job

    def finish(self, key: str, value: float, job: FakeJob) -> None:
        self.applied.append((key, job.value))

    def fail(self, key: str, error: Exception) -> None:
        self.errors.append((key, str(error)))


def make(recorder: Recorder) -> Coalescer[str, FakeJob]:
    return Coalescer(recorder.send, lambda job: job.finished, recorder.finish, recorder.fail)


def test_values_arriving_while_busy_collapse_to_the_newest() -> None:
    rec = Recorder()
    c = make(rec)
    for value in (0.1, 0.2, 0.3, 0.4):
        c.request("a", value)
    assert rec.sent == [("a", 0.1)]  # sent at once; the others wait
    assert c.poll() is True and rec.applied == []
    rec.jobs[0].finished = True
    assert c.poll() is True
    assert rec.sent == [("a", 0.1), ("a", 0.4)] and rec.applied == [("a", 0.1)]
    rec.jobs[1].finished = True
    assert c.poll() is False and rec.applied == [("a", 0.1), ("a", 0.4)]
    assert c.sent == 2 and not c.busy()


def test_keys_are_independent() -> None:
    rec = Recorder()
    c = make(rec)
    c.request("a", 0.1)
    c.request("b", 0.2)
    assert rec.sent == [("a", 0.1), ("b", 0.2)]
    rec.jobs[1].finished = True
    c.poll()
    assert rec.applied == [("b", 0.2)] and c.busy("a") and not c.busy("b")


def test_send_and_finish_failures_are_reported_and_serving_goes_on() -> None:
    rec = Recorder(fail_on=0.5)
    c = make(rec)
    c.request("a", 0.5)
    assert rec.errors == [("a", "cannot send 0.5")] and not c.busy()

    def broken_finish(key: str, value: float, job: FakeJob) -> None:
        raise ValueError("bad reply")

    c2: Coalescer[str, FakeJob] = Coalescer(rec.send, lambda job: job.finished, broken_finish, rec.fail)
    c2.request("b", 0.3)
    rec.jobs[-1].finished = True
    assert c2.poll() is False and rec.errors[-1] == ("b", "bad reply")


def test_finish_may_ask_again() -> None:
    rec = Recorder()
    retried: list[float] = []
    c: Coalescer[str, FakeJob]

    def finish(key: str, value: float, job: FakeJob) -> None:
        if not retried:
            retried.append(value)
            c.request(key, value)  # e.g. the field was gone: make it again

    c = Coalescer(rec.send, lambda job: job.finished, finish, rec.fail)
    c.request("a", 0.3)
    rec.jobs[0].finished = True
    assert c.poll() is True and rec.sent == [("a", 0.3), ("a", 0.3)]


def test_forget_drops_everything() -> None:
    rec = Recorder()
    c = make(rec)
    c.request("a", 0.1)
    c.request("a", 0.2)
    c.forget()
    assert not c.busy() and c.jobs() == []
    c.forget("never seen")  # no error
