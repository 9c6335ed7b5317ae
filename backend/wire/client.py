"""The add-on's side of the wire: ``python -m backend serve`` as a child process, and its replies.

A reader thread decodes the backend's frames and completes the matching ``Pending`` request; a
writer thread sends requests in order, so that a backend that stops reading can block only it,
never the caller; a third thread drains stderr, whose last lines explain an unexpected exit.

A backend that hangs (stuck, stopped, deadlocked) is found by its silence: every frame it sends
(progress, a reply, anything) counts as a sign of life, and ``Pending.wait(silence=...)`` or
``Pending.give_up_after`` stop it once a waiting request has heard nothing for that long.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from .constants import KIND_ARRAYS
from .frames import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    FrameError,
    FrameReader,
    Readable,
    encode,
    write_parts,
)
from .schemas import (
    BACKEND_EXITED,
    BACKEND_MESSAGES,
    NO_ANSWER,
    PAYLOAD_TOO_LARGE,
    VERSION_MISMATCH,
    Message,
    MessageError,
)

Parts = list[bytes | memoryview]
POLL_S = 0.1  # how often a waiting request looks at the backend's silence


OBSERVATION_ARRAYS = {name for names in KIND_ARRAYS.values() for name in names}  # reconstruct() takes


class BackendError(RuntimeError):
    """The backend answered a request with an error, or is gone.

    ``fatal``: the conversation is over (the backend said so, its stream broke, it exited or was
    given up); every later request fails the same way.
    """

    def __init__(self, code: str, message: str, request_id: int | None = None, fatal: bool = False) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.fatal = fatal


ProgressCallback = Callable[[str, float], None]


class Pending:
    """A request in flight. ``wait()`` returns its reply or raises ``BackendError``."""

    def __init__(
        self, owner: BackendProcess, request_id: int, kind: str, on_progress: ProgressCallback | None
    ) -> None:
        self.id = request_id
        self.type = kind
        self.progress: tuple[str, float] | None = None  # latest (stage, fraction)
        self.sent = time.monotonic()
        self._owner = owner
        self._on_progress = on_progress
        self._finished = threading.Event()
        self._reply: Message | None = None
        self._error: BackendError | None = None

    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None, *, silence: float | None = None) -> Message:
        """Block until the reply arrives; TimeoutError after ``timeout`` seconds.

        With ``silence``, a backend that sends nothing at all for that many seconds is given up
        (``give_up_after``): the request then fails with ``no_answer``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished.is_set():
            if silence is not None and self.give_up_after(silence):
                break
            step = POLL_S if silence is not None else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"'{self.type}' request {self.id} got no reply within {timeout} s")
                step = left if step is None else min(step, left)
            self._finished.wait(step)
        if self._error is not None:
            raise self._error
        assert self._reply is not None
        return self._reply

    def quiet_for(self) -> float:
        """Seconds since the backend was last heard from, or since this request went out if later."""
        return time.monotonic() - max(self.sent, self._owner.last_heard)

    def give_up_after(self, silence: float) -> bool:
        """Stop the backend if it has sent nothing for ``silence`` s while this request waits
        (``BackendProcess.give_up``); True if it did."""
        if self.done() or self.quiet_for() <= silence:
            return False
        self._owner.give_up(f"it sent nothing for {silence:g} s while '{self.type}' request {self.id} waited")
        return True

    def cancel(self) -> None:
        """Ask the backend to stop this request (it then ends with a ``cancelled`` error)."""
        if not self.done():
            self._owner.cancel(self.id)

    def _progress(self, stage: str, fraction: float) -> None:
        self.progress = (stage, fraction)
        if self._on_progress is not None:
            self._on_progress(stage, fraction)

    def _finish(self, reply: Message | None, error: BackendError | None) -> None:
        self._reply, self._error = reply, error
        self._finished.set()


class BackendProcess:
    """Runs ``python -m backend serve`` as a child process and talks to it over its pipes.

    Spawning sends ``hello`` at once and returns without waiting; ``wait_ready()`` blocks until
    the backend answers. A reader thread decodes replies; progress callbacks run on that thread,
    so a GUI must hand them to its own thread. The backend's stderr is kept (its last lines explain
    an unexpected exit) and, with ``log_path``, appended to that file.
    Closing stdin ends the backend, so the child never outlives this object's process.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: str | Path | None = None,
        client_name: str = "",
        max_payload_bytes: int = 1 << 34,
    ) -> None:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window pops up on Windows
        self._proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            cwd=cwd,
            env=None if env is None else dict(env),
            creationflags=flags,
        )
        assert (
            self._proc.stdin is not None and self._proc.stdout is not None and self._proc.stderr is not None
        )
        self._stdin = self._proc.stdin
        self._lock = threading.Lock()  # guards _pending and _closed
        self._outbox: queue.SimpleQueue[Parts | None] = queue.SimpleQueue()  # None: close stdin
        self._ids = itertools.count(1)
        self._pending: dict[int, Pending] = {}
        self._closed: BackendError | None = None
        self._ready = threading.Event()
        self.ready: Message | None = None  # the ``ready`` message once it arrived
        self.errors: list[BackendError] = []  # errors that belong to no request
        self.last_heard = time.monotonic()  # when the backend last sent a frame (or was started)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self._log_path = Path(log_path) if log_path is not None else None
        self._reader = FrameReader(cast(Readable, self._proc.stdout), BACKEND_MESSAGES, max_payload_bytes)
        self._stderr_thread = threading.Thread(target=self._drain_stderr, name="backend-stderr", daemon=True)
        self._stderr_thread.start()
        self._reader_thread = threading.Thread(target=self._read_loop, name="backend-reader", daemon=True)
        self._reader_thread.start()
        self._writer_thread = threading.Thread(target=self._write_loop, name="backend-writer", daemon=True)
        self._writer_thread.start()
        hello: dict[str, Any] = {"protocol_version": PROTOCOL_VERSION}
        if client_name:
            hello["client"] = client_name
        self._send(Message("hello", None, hello))

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self._proc.pid

    def is_ready(self) -> bool:
        return self._ready.is_set() and self.ready is not None

    def wait_ready(self, timeout: float | None = None) -> Message:
        """Block until ``ready``; raise ``BackendError`` if the backend refused or died."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"backend (pid {self.pid}) did not become ready within {timeout} s")
        if self.ready is None:
            raise self._closed or BackendError(BACKEND_EXITED, "backend closed before it was ready")
        return self.ready

    @property
    def failure(self) -> BackendError | None:
        """Why the connection ended (a fatal error, or the process exiting); None while it is open."""
        return self._closed

    def alive(self) -> bool:
        return self._proc.poll() is None and self._closed is None

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._stderr_tail)[-lines:])

    def close(self, timeout: float = 5.0) -> int:
        """Ask the backend to shut down, wait ``timeout`` s, then kill it. Returns the exit status."""
        if self._proc.poll() is None:
            self._send(Message("shutdown"))
        self._outbox.put(None)  # the writer closes stdin after what is queued (or gives up on it)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for thread in (self._reader_thread, self._stderr_thread, self._writer_thread):
            thread.join(timeout)
        return int(self._proc.returncode)

    def give_up(self, reason: str) -> None:
        """End the conversation with a backend that stopped answering: every waiting request fails
        with ``no_answer`` and ``reason``, and the process is killed (a stuck one never recovers)."""
        self._shut(BackendError(NO_ANSWER, f"no answer from the backend: {reason}", fatal=True))
        self.kill()

    def kill(self) -> None:
        """Stop the backend at once (frees all of its memory, GPU memory included)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._outbox.put(None)  # let the writer thread end

    @property
    def payload_limit(self) -> int:
        """The largest request payload the backend takes: its ``ready`` says; before that, serve's
        default."""
        ready = self.ready
        return int(ready.fields["max_payload_bytes"]) if ready is not None else DEFAULT_MAX_PAYLOAD_BYTES

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------------------
    def request(
        self,
        kind: str,
        fields: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Pending:
        """Send one request with a fresh id; the reply arrives on the returned ``Pending``.

        It is queued for the writer thread, so this never blocks on the pipe. A payload beyond the
        backend's limit is refused here (``payload_too_large``, not fatal): sent, it would end the
        conversation, since the backend cannot skip what it will not read.
        """
        request_id = next(self._ids)
        message = Message(kind, request_id, dict(fields or {}), dict(arrays or {}))
        parts = encode(message)  # a bad request fails here, in the caller, before anything is sent
        payload = sum(memoryview(part).nbytes for part in parts[1:])
        if payload > self.payload_limit:
            raise BackendError(
                PAYLOAD_TOO_LARGE,
                f"the request's {payload:,} bytes of arrays exceed the backend's limit of "
                f"{self.payload_limit:,} bytes",
            )
        pending = Pending(self, request_id, kind, on_progress)
        with self._lock:
            if self._closed is not None:
                raise self._closed
            self._pending[request_id] = pending
        self._outbox.put(parts)
        return pending

    def reconstruct(
        self,
        *,
        model: str | None = None,
        kind: str | None = None,
        options: Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        **given: np.ndarray | None,
    ) -> Pending:
        """Reconstruct from an observation's arrays (``points=...``, ``views=..., cameras=...``:
        the names of ``KIND_ARRAYS``)."""
        unknown = sorted(set(given) - OBSERVATION_ARRAYS)
        if unknown:
            raise TypeError(f"reconstruct() got unknown observation arrays: {', '.join(unknown)}")
        arrays = {name: a for name, a in given.items() if a is not None}
        fields = {"model": model, "kind": kind, "options": dict(options or {})}
        return self.request("reconstruct", fields, arrays, on_progress)

    def extract(self, field_id: str, tau: float, on_progress: ProgressCallback | None = None) -> Pending:
        return self.request("extract", {"field_id": field_id, "tau": float(tau)}, None, on_progress)

    def sample(
        self,
        model: str | None = None,
        seed: int = 0,
        options: Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Pending:
        return self.request(
            "sample", {"model": model, "seed": seed, "options": dict(options or {})}, None, on_progress
        )

    def release(self, field_id: str | None = None) -> Pending:
        """Free one cached field, or (None) every cached field and the device's cached memory."""
        return self.request("release", {"field_id": field_id})

    def echo(self, data: Any = None, arrays: Mapping[str, np.ndarray] | None = None) -> Pending:
        """A no-op round trip through the backend's work queue (ordered after earlier requests)."""
        return self.request("echo", {"data": data}, arrays)

    def cancel(self, request_id: int) -> None:
        self._send(Message("cancel", request_id))

    def send_raw(self, data: bytes | Sequence[bytes | memoryview]) -> None:
        """Write bytes as they are (for tests of the backend's handling of malformed input)."""
        self._outbox.put([data] if isinstance(data, bytes | bytearray) else list(data))

    # -- plumbing ----------------------------------------------------------------------------------------
    def _send(self, message: Message) -> None:
        self._outbox.put(encode(message))

    def _write_loop(self) -> None:
        """Write queued frames in order until ``None``, then close the backend's input. Once a
        write fails the process is gone (the reader thread reports why): the rest is dropped."""
        broken = False
        while (parts := self._outbox.get()) is not None:
            if broken:
                continue
            try:
                write_parts(self._stdin, parts)
            except (OSError, ValueError):  # ValueError: the pipe was closed on this side
                broken = True
        with contextlib.suppress(OSError):
            self._stdin.close()

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        log = self._log_path.open("a", encoding="utf-8") if self._log_path else None
        try:
            for raw in iter(self._proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._stderr_tail.append(line)
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
        finally:
            if log is not None:
                log.close()

    def _read_loop(self) -> None:
        fatal: BackendError | None = None
        try:
            while True:
                try:
                    message = self._reader.read()
                except MessageError as e:
                    self.last_heard = time.monotonic()
                    self._fail_one(BackendError(e.code, str(e), e.request_id))
                    continue
                self.last_heard = time.monotonic()
                if message is None:
                    break
                if not self._dispatch(message):
                    break
        except FrameError as e:
            fatal = BackendError(e.code, f"unreadable reply from the backend: {e}", fatal=True)
            self.kill()
        except OSError as e:
            fatal = BackendError(BACKEND_EXITED, f"lost the backend's output: {e}", fatal=True)
        self._shut(fatal)

    def _dispatch(self, message: Message) -> bool:
        """Route one reply; False when the conversation is over."""
        if message.type == "ready":
            if message.fields["protocol_version"] != PROTOCOL_VERSION:
                text = "backend answered with another protocol version"
                self._shut(BackendError(VERSION_MISMATCH, text, fatal=True))
                return False
            self.ready = message
            self._ready.set()
            return True
        if message.type == "bye":
            return True
        if message.type == "progress":
            with self._lock:
                pending = self._pending.get(message.id or 0)
            if pending is not None:
                pending._progress(message.fields["stage"], float(message.fields["fraction"]))
            return True
        if message.type == "error":
            fatal = bool(message.fields.get("fatal")) or not self._ready.is_set()
            error = BackendError(message.fields["code"], message.fields["message"], message.id, fatal)
            if fatal:
                self._shut(error)
                return True  # read on: the backend may still flush stderr and exit
            self._fail_one(error)
            return True
        with self._lock:
            pending = self._pending.pop(message.id or 0, None)
        if pending is not None:
            pending._finish(message, None)
        return True

    def _fail_one(self, error: BackendError) -> None:
        with self._lock:
            pending = self._pending.pop(error.request_id, None) if error.request_id is not None else None
        if pending is None:
            self.errors.append(error)
        else:
            pending._finish(None, error)

    def _shut(self, error: BackendError | None) -> None:
        """Mark the connection closed and fail every request still waiting."""
        if error is None:
            try:
                status: int | None = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                status = None
            self._stderr_thread.join(timeout=1)  # its last lines usually say why
            last = next((line for line in reversed(self._stderr_tail) if line.strip()), "")
            detail = f": {last}" if last else ""
            error = BackendError(BACKEND_EXITED, f"backend exited (status {status}){detail}", fatal=True)
        with self._lock:
            if self._closed is None:
                self._closed = error
            pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            p._finish(None, self._closed)
        self._ready.set()  # wakes wait_ready(), which raises when no ``ready`` came
