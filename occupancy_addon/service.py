"""The backend process as the add-on sees it: started on first use, one per Blender session.

Requests go out at once (the backend queues them while it still loads torch) and come back on
the protocol client's reader thread. Nothing here touches bpy from that thread: callers poll a
``BackendRequest`` on Blender's main thread, from a modal operator's timer or ``bpy.app.timers``
in the UI, or with the blocking ``BackendRequest.wait`` loop in background mode, where timers
never run.

No request waits for ever. Every poll also watches the backend: one that has sent nothing at all
(no progress, no reply) for ``SILENCE_LIMIT_S`` of the request's kind is stuck or gone, and is
stopped; the request then fails with a message that offers Restart Backend, as after a crash. A
backend that ignores Cancel for ``CANCEL_GRACE_S`` is stopped too, and starts again on next use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backend_link import load_protocol
from .backend_process import backend_command, backend_environment, serve_arguments
from .errors import FieldGoneError, JobCancelled, UserError

if TYPE_CHECKING:  # at run time the wire package is loaded by path (backend_link.load_protocol)
    from backend.wire import BackendError, BackendProcess, Message, Pending

ProgressReport = Callable[[str | None, float], None]

# How long a request may go without any sign of life from the backend (a progress message, a
# reply, anything) before the backend counts as stuck. Progress comes throughout a reconstruction,
# so the limit must cover the longest stretch without one, not the whole run: measured on a busy
# 2-core CPU, 2 s in a 256^3 reconstruction, 14 s between refinement steps at 256^3.
SILENCE_LIMIT_S: dict[str, float] = {"reconstruct": 120.0, "sample": 120.0, "extract": 60.0, "release": 30.0}
STARTUP_S = 120.0  # added until the backend is ready: importing torch (and CUDA) from a cold disk
CANCEL_GRACE_S = 15.0  # after Cancel, how long the backend has to stop the request
POLL_S = 0.1  # how often a blocking wait looks at the backend


@dataclass(frozen=True)
class BackendConfig:
    """Everything that decides how the backend process is started; a change means a new process."""

    python: Path
    python_source: str  # where the interpreter setting came from, for messages
    root: Path  # the folder that contains the backend package
    weights_dir: Path
    device: str
    cache_mb: int
    log_path: Path | None = None
    half: bool = False  # 16-bit evaluation where it pays (``serve --half``)

    def argv(self) -> list[str]:
        return backend_command(
            self.python, serve_arguments(self.weights_dir, self.device, self.cache_mb, self.half)
        )

    def same_process(self, other: BackendConfig) -> bool:
        """Whether a process started for ``other`` also serves this configuration."""
        return self.argv() == other.argv() and self.root == other.root


class BackendRequest:
    """One request to the backend in flight. Poll ``done()``/``progress`` on the main thread, then
    ``outcome()``."""

    def __init__(self, service: BackendService, process: BackendProcess, pending: Pending, what: str) -> None:
        self.service = service
        self.process = process  # the one the request went to
        self.pending = pending
        self.what = what  # "reconstruct", "extract", ... for messages
        self.token = service.token  # the process that holds any field this job makes
        self.started = time.perf_counter()
        self.cancelled_at: float | None = None  # monotonic time of the first cancel

    @property
    def progress(self) -> tuple[str | None, float]:
        latest = self.pending.progress  # written by the reader thread; a tuple swap is atomic
        return (None, 0.0) if latest is None else latest

    def silence_limit(self) -> float:
        """Seconds without a message from the backend after which this request gives it up."""
        limit = SILENCE_LIMIT_S.get(self.what, max(SILENCE_LIMIT_S.values()))
        return limit if self.process.is_ready() else limit + STARTUP_S

    def watch(self) -> None:
        """Stop a backend that fell silent or ignores Cancel, which ends this job (see the module's
        docstring). Every poll runs it, so no wait outlasts the limits."""
        if self.pending.done():
            return
        if self.cancelled_at is not None and time.monotonic() - self.cancelled_at > CANCEL_GRACE_S:
            self.service.stop_process(self.process)  # the job ends as cancelled
            return
        self.pending.give_up_after(self.silence_limit())

    def done(self) -> bool:
        self.watch()
        return bool(self.pending.done())

    def join(self, timeout: float | None = None) -> bool:
        """Block until the job ended (without raising its error); False after ``timeout`` s."""
        protocol = load_protocol()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            step = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if step <= 0:
                return False
            try:
                self.pending.wait(step)
            except TimeoutError:
                continue
            except protocol.BackendError:
                break
        return True

    def cancel(self) -> None:
        """Ask the backend to stop; the job then ends with JobCancelled. Safe from any thread."""
        if self.cancelled_at is None:
            self.cancelled_at = time.monotonic()
        self.pending.cancel()

    def outcome(self) -> Message:
        """The reply message; raises JobCancelled or UserError. Only call once ``done()``."""
        protocol = load_protocol()
        try:
            return self.pending.wait(0)
        except protocol.BackendError as error:
            raise self.service.translate(error, self.token) from None

    def wait(self, report: ProgressReport | None = None, poll_s: float = 0.05) -> None:
        """Block the calling thread until the job ended, reporting progress changes; then read
        ``outcome()``.

        For background mode and scripts: Blender's timers never run there, so nothing else would
        ever collect the reply. Ctrl+C cancels the request in the backend before it propagates.
        """
        shown: tuple[str | None, float] | None = None
        try:
            while not self.join(poll_s):
                if report is not None and self.progress != shown:
                    shown = self.progress
                    report(*shown)
        except KeyboardInterrupt:
            self.cancel()
            raise


class BackendService:
    """Owns the backend process: starts it lazily, remembers a crash until the user restarts."""

    def __init__(self) -> None:
        self.process: BackendProcess | None = None
        self.config: BackendConfig | None = None
        self.crash: str | None = None  # why the last process died unexpectedly
        self._crash_config: BackendConfig | None = None
        self._generation = 0

    # -- state ------------------------------------------------------------------------------------------
    @property
    def token(self) -> str:
        """Identifies the current process (it changes when one is started or stopped, not when one
        crashes); fields made under another token are gone."""
        return f"{os.getpid()}:{self._generation}"

    def ready_message(self) -> Message | None:
        """The backend's ``ready`` message (device, models), or None while it is not (yet) up."""
        process = self.process
        if process is None or not process.is_ready() or not process.alive():
            return None
        return process.ready

    def running(self) -> bool:
        return self.process is not None and bool(self.process.alive())

    def describe(self) -> str:
        """One line for the panel: the device the backend uses, or why it is not running."""
        if self.crash is not None or (self.process is not None and not self.process.alive()):
            return "Backend stopped: press Restart Backend"
        ready = self.ready_message()
        if ready is not None:
            return f"Device: {ready.fields['device']} (backend running)"
        if self.running():
            return "Backend starting"
        return "Backend not started (starts on first use)"

    # -- lifecycle --------------------------------------------------------------------------------------
    def connect(self, config: BackendConfig) -> BackendProcess:
        """The running process for ``config``, started when needed; UserError after a crash."""
        if self.process is not None and not self.process.alive() and self.crash is None:
            self._record_crash(self.process.failure)  # it died while idle: report, don't hide it
        if self.crash is not None and self._crash_config is not None:
            if config.same_process(self._crash_config):
                raise UserError(self.crash_message(), crashed=True)
            self.crash = None  # new settings: worth a fresh start
        if self.process is not None and self.config is not None and config.same_process(self.config):
            return self.process
        self.stop()
        return self._start(config)

    def _start(self, config: BackendConfig) -> BackendProcess:
        protocol = load_protocol()
        try:
            self.process = protocol.BackendProcess(
                config.argv(),
                cwd=config.root,
                env=backend_environment(config.root, os.environ),
                log_path=config.log_path,
                client_name="blender",
            )
        except OSError as error:
            raise UserError(
                f"The backend cannot start with {config.python} (from {config.python_source}): "
                f"{error.strerror or error}. Choose another Backend Python in the add-on preferences"
            ) from None
        self.config = config
        self._generation += 1
        return self.process

    def stop(self) -> None:
        """End the process (politely, then by force). Any request still running fails."""
        process, self.process = self.process, None
        self._generation += 1
        if process is not None:
            process.close(timeout=2.0)

    def stop_process(self, process: BackendProcess) -> None:
        """End ``process`` at once, if it is still the current one: its requests end as cancelled
        (it was stopped, not crashed) and the next request starts a fresh one."""
        process.kill()
        if process is self.process:
            self.stop()

    def restart(self) -> None:
        """Forget a crash and end the process; the next request starts a fresh one. This also
        frees all of the backend's memory, GPU memory included."""
        self.stop()
        self.crash = None
        self._crash_config = None

    def request(self, config: BackendConfig, what: str, *args: Any, **kwargs: Any) -> BackendRequest:
        """Send ``process.<what>(*args, **kwargs)`` (reconstruct, extract, sample, release)."""
        process = self.connect(config)
        protocol = load_protocol()
        try:
            pending = getattr(process, what)(*args, **kwargs)
        except protocol.BackendError as error:  # the conversation is over, or the request too large
            raise self.translate(error) from None
        return BackendRequest(self, process, pending, what)

    # -- errors -----------------------------------------------------------------------------------------
    def crash_message(self) -> str:
        return (
            f"The backend stopped unexpectedly ({self.crash}). Nothing in the scene was changed. "
            "Press Restart Backend to start it again"
        )

    def _record_crash(self, error: BackendError | None) -> None:
        reason = getattr(error, "message", None) or str(error or "the process exited")
        self.crash = reason
        self._crash_config = self.config
        process, self.process = self.process, None
        if process is not None:
            process.close(timeout=1.0)  # it is gone or going: reap it and its reader threads

    def translate(self, error: BackendError, token: str | None = None) -> Exception:
        """A protocol ``BackendError`` as the exception the add-on shows. ``token``: the process
        the failed request went to (None: the current one)."""
        protocol = load_protocol()
        code, text = error.code, error.message
        config = self.config
        if code == protocol.CANCELLED or code == protocol.SUPERSEDED:
            return JobCancelled(text)
        if token is not None and token != self.token and error.fatal:
            # a process the user restarted (or a cancel stopped); the current one is fine
            return JobCancelled(f"the backend was restarted ({text})")
        if code == protocol.ENGINE_UNAVAILABLE:
            self._record_crash(error)
            where = f"{config.python} (from {config.python_source})" if config else "the backend Python"
            return UserError(
                f"Backend not configured: {where} cannot run the backend ({text}). Choose a Python "
                "with torch as Backend Python in the add-on preferences, then press Restart Backend",
                crashed=True,
            )
        if code == protocol.PAYLOAD_TOO_LARGE and not error.fatal:
            return UserError(f"The input is too large to send to the backend: {text}. Use less of it")
        if error.fatal:  # the process exited, broke the protocol or stopped answering
            started = self.process is None or self.process.is_ready()
            if not started and code in (protocol.BACKEND_EXITED, protocol.BAD_FRAME) and config is not None:
                self._record_crash(error)
                return UserError(
                    f"The backend could not start with {config.python} (from {config.python_source}): "
                    f"{text}. Check Backend Python in the add-on preferences, then press Restart Backend",
                    crashed=True,
                )
            self._record_crash(error)
            if code == protocol.NO_ANSWER:
                return UserError(
                    f"The backend did not answer ({text}), so it was stopped. Nothing in the scene was "
                    "changed. Press Restart Backend to start it again",
                    crashed=True,
                )
            if code != protocol.BACKEND_EXITED:
                return UserError(
                    f"Protocol error: {text} [{code}]. The backend stopped; nothing in the scene was "
                    "changed. Press Restart Backend to start it again",
                    crashed=True,
                )
            return UserError(self.crash_message(), crashed=True)
        if code == protocol.UNKNOWN_MODEL:
            return UserError(f"Model missing: {text}")
        if code == protocol.UNKNOWN_FIELD:
            return FieldGoneError(text)
        if code == protocol.BAD_INPUT:
            return UserError(f"The backend cannot use this input: {text}")
        if code == protocol.OUT_OF_MEMORY:
            return UserError(f"Out of memory ({text}). Lower the resolution or press Release GPU Memory")
        return UserError(f"Backend error: {text} [{code}]")
