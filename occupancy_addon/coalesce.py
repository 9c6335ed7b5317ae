"""Latest-value-wins requests: what keeps a dragged slider from flooding the backend (no bpy).

Per key (one result object) at most one request is in flight. Values that arrive meanwhile
replace each other, and only the last one is sent once the running request is done. A finished
request's reply is still applied, so the mesh follows the drag, but only after the next request
went out, so the backend works while Blender writes the mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
J = TypeVar("J")


class Coalescer(Generic[K, J]):
    """``send(key, value) -> job`` starts a request; ``done(job)`` says whether it ended;
    ``finish(key, value, job)`` applies its reply; ``fail(key, error)`` reports an exception that
    ``send`` or ``finish`` raised. Everything runs on the thread that calls ``request``/``poll``."""

    def __init__(
        self,
        send: Callable[[K, float], J],
        done: Callable[[J], bool],
        finish: Callable[[K, float, J], None],
        fail: Callable[[K, Exception], None],
    ) -> None:
        self._send, self._done, self._finish, self._fail = send, done, finish, fail
        self._wanted: dict[K, float] = {}
        self._flight: dict[K, tuple[float, J]] = {}
        self.sent = 0  # requests started, for diagnostics and tests

    def request(self, key: K, value: float) -> None:
        """Ask for ``value``; sent now when nothing is in flight for ``key``, else when it ends."""
        self._wanted[key] = value
        if key not in self._flight:
            self._launch(key)

    def poll(self) -> bool:
        """Handle every finished request; True while anything is in flight or waiting."""
        for key, (value, job) in list(self._flight.items()):
            if not self._done(job):
                continue
            del self._flight[key]
            if key in self._wanted:
                self._launch(key)  # the backend starts on the newest value while the mesh is written
            try:
                self._finish(key, value, job)
            except Exception as error:  # reported; the other keys go on
                self._fail(key, error)
        for key in [k for k in self._wanted if k not in self._flight]:
            self._launch(key)  # asked for again by ``finish`` (e.g. a retry)
        return self.busy()

    def busy(self, key: K | None = None) -> bool:
        if key is not None:
            return key in self._flight or key in self._wanted
        return bool(self._flight or self._wanted)

    def jobs(self) -> list[J]:
        return [job for _, job in self._flight.values()]

    def forget(self, key: K | None = None) -> None:
        """Drop waiting values (and stop tracking running requests) of ``key``, or of all keys."""
        if key is None:
            self._wanted.clear()
            self._flight.clear()
        else:
            self._wanted.pop(key, None)
            self._flight.pop(key, None)

    def _launch(self, key: K) -> None:
        value = self._wanted.pop(key)
        try:
            job = self._send(key, value)
        except Exception as error:  # reported through ``fail``
            self._fail(key, error)
            return
        self.sent += 1
        self._flight[key] = (value, job)
