"""Requests waiting for the worker thread, with cancellation and superseding."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

from ..wire.schemas import Message


@dataclass
class Job:
    """One request for the worker. ``cancelled`` is polled by the engine between chunks."""

    message: Message
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def id(self) -> int:
        assert self.message.id is not None
        return self.message.id

    @property
    def type(self) -> str:
        return self.message.type

    def supersede_key(self) -> str | None:
        """Jobs with the same key replace each other while waiting: only the newest threshold counts."""
        if self.type == "extract":
            return str(self.message.fields["field_id"])
        return None


class JobQueue:
    """FIFO of waiting jobs plus the one being run; safe to use from several threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._closed = False

    def put(self, job: Job) -> list[Job]:
        """Queue ``job``; returns the waiting jobs it supersedes (removed, to be answered by the caller)."""
        with self._cond:
            key = job.supersede_key()
            replaced = [j for j in self._waiting if key is not None and j.supersede_key() == key]
            for old in replaced:
                self._waiting.remove(old)
            self._waiting.append(job)
            self._cond.notify()
            return replaced

    def take(self) -> Job | None:
        """Block until a job is waiting and mark it running; None once the queue is closed."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            self._running = self._waiting.popleft()
            return self._running

    def done(self, job: Job) -> None:
        with self._cond:
            if self._running is job:
                self._running = None

    def cancel(self, request_id: int) -> Job | None:
        """Cancel a job: a waiting one is removed and returned; a running one is flagged (returns None)."""
        with self._cond:
            for job in self._waiting:
                if job.id == request_id:
                    self._waiting.remove(job)
                    return job
            if self._running is not None and self._running.id == request_id:
                self._running.cancelled.set()
            return None

    def in_flight(self, request_id: int) -> bool:
        with self._cond:
            running = self._running is not None and self._running.id == request_id
            return running or any(job.id == request_id for job in self._waiting)

    def idle(self) -> bool:
        """Nothing waiting and nothing running."""
        with self._cond:
            return self._running is None and not self._waiting

    def close(self) -> list[Job]:
        """Stop handing out jobs, flag the running one as cancelled and return those still waiting."""
        with self._cond:
            self._closed = True
            if self._running is not None:
                self._running.cancelled.set()
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
            return left
