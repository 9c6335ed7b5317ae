"""The serve process: answers protocol requests from the Blender add-on with a reconstruction engine.

Threads:
- loader: builds the engine (imports torch, lists models) while the client's ``hello`` is on its
  way, then sends ``ready``;
- reader: decodes frames from the wire, answers protocol errors, acts on ``cancel`` and
  ``shutdown`` at once and queues everything else;
- worker: runs queued requests on the engine one at a time and streams their progress;
- the calling thread waits for the end and winds everything down.

The process ends when its input closes (the add-on quit, crashed or was killed), on ``shutdown``,
when a reply cannot be written (the client is gone), or after a frame error that makes the stream
unreadable: bad magic, another protocol version, nonzero flags, an oversized header, a payload
beyond ``max_payload_bytes`` (it cannot be skipped without reading it), or a stream that ends
inside a frame. Such an error is answered with a fatal ``error`` (its code says which) before the
process exits. Every other bad request is answered with an ``error`` and serving goes on.

Exit status: 0 after an orderly end (``shutdown``, input closed, client gone); 1 when the engine
could not be loaded (reported to the client as ``engine_unavailable`` first); 2 when the input
stream was unreadable or spoke another protocol version. A failure status stays, whatever ends
the conversation afterwards (the client usually answers a fatal error by shutting down).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..engine.types import FieldGoneError, MeshResult, ModelInfo, ProgressFn
from ..wire import schemas
from ..wire.frames import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    FrameError,
    FrameReader,
    encode,
    write_parts,
)
from ..wire.schemas import Message, MessageError
from .jobs import Job, JobQueue
from .requests import (
    RequestError,
    choose_model,
    classify,
    error_message,
    observation_from_arrays,
    options_from_fields,
    result_message,
)

if TYPE_CHECKING:  # the engine imports torch, which the server loads only in its loader thread
    from ..engine.reconstructor import Reconstructor as Engine

log = logging.getLogger("backend.serve")

EXIT_OK = 0
EXIT_ENGINE_UNAVAILABLE = 1
EXIT_BAD_STREAM = 2
PROGRESS_INTERVAL_S = 0.05  # progress messages per request are at most this frequent (per stage)
WORKER_JOIN_S = 5.0  # how long ``shutdown`` waits for a cancelled engine call before leaving anyway
BEFORE_HELLO = frozenset({"hello", "shutdown"})  # the messages accepted before the handshake


# A request's work on the engine: a mesh (sent as a ``result``) or the whole reply.
Handler = Callable[["Engine", Job], "MeshResult | Message"]


class _Writable(Protocol):
    def write(self, data: Any, /) -> int | None: ...

    def flush(self) -> None: ...


def reconstructor_loader(
    device: str, weights_dir: str | None, cache_bytes: int | None = None, half: bool = False
) -> Callable[[], Engine]:
    """A function that builds the real engine (imports torch when called, not before).

    ``cache_bytes`` None keeps the engine's own default size of the field cache. ``half`` asks for
    16-bit evaluation where it pays (CUDA, or a CPU with AMX: ``engine/precision.py``); elsewhere it
    is ignored (with a log line), so that one setting suits every machine the add-on runs on.
    """

    def load() -> Engine:
        from ..engine.precision import half_dtype
        from ..engine.reconstructor import DEFAULT_CACHE_BYTES, Reconstructor, resolve_device

        resolved = resolve_device(device)
        dtype = half_dtype(resolved)
        offered = dtype is not None
        if half and not offered:
            log.warning("half precision does not pay on %s; evaluating in float32", resolved)
        elif half:
            log.info("half precision: evaluating in %s on %s", str(dtype).removeprefix("torch."), resolved)
        return Reconstructor(
            device=resolved,
            weights_dir=weights_dir,
            cache_bytes=DEFAULT_CACHE_BYTES if cache_bytes is None else cache_bytes,
            half=half and offered,
        )

    return load


def _model_entry(model: ModelInfo) -> dict[str, Any]:
    """A model in the ``ready`` message: what the add-on lists and Automatic chooses by."""
    entry: dict[str, Any] = {"name": model.name, "kind": model.kind, "tau": model.tau}
    if model.automatic_points is not None:
        entry["automatic_points"] = list(model.automatic_points)
    return entry


def free_device_cache() -> None:
    """After running out of memory: hand cached allocator blocks back to the device."""
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class Server:
    """Serves one client over a pair of byte streams. ``load_engine`` runs on a background thread.

    ``serve()`` may return while daemon threads still run (the engine import, an engine call):
    the caller should end the process right after, without waiting for them.
    """

    def __init__(
        self,
        load_engine: Callable[[], Engine],
        wire_in: Any,
        wire_out: IO[bytes] | _Writable,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self._load_engine = load_engine
        self._reader = FrameReader(wire_in, schemas.CLIENT_MESSAGES, max_payload_bytes)
        self._out = wire_out
        self._max_payload_bytes = max_payload_bytes
        self._write_lock = threading.Lock()
        self._sealed = False  # set by the last message (a fatal error or ``bye``); guarded by _write_lock
        self._jobs = JobQueue()
        self._stop = threading.Event()
        self._exit_code = EXIT_OK
        self._say_bye = False
        self._finish_lock = threading.Lock()
        self._hello = threading.Event()
        self._engine: Engine | None = None
        self._models: list[ModelInfo] = []
        self._engine_ready = threading.Event()
        self._worker = threading.Thread(target=self._work_loop, name="serve-worker", daemon=True)
        # Control messages act at once, on the reader thread; requests run in order on the worker.
        self._control: dict[str, Callable[[Message], None]] = {
            "hello": self._on_hello,
            "shutdown": self._on_shutdown,
            "cancel": self._on_cancel,
        }
        self._handlers: dict[str, Handler] = {
            "reconstruct": self._reconstruct,
            "sample": self._sample,
            "extract": self._extract,
            "release": self._release,
            "echo": self._echo,
        }

    # -- lifecycle ---------------------------------------------------------------------------------------
    def serve(self) -> int:
        """Run until the conversation ends; returns the process exit status."""
        started = time.perf_counter()
        threads = [
            threading.Thread(target=self._load, args=(started,), name="serve-loader", daemon=True),
            threading.Thread(target=self._read_loop, name="serve-reader", daemon=True),
        ]
        worker = self._worker
        for t in (*threads, worker):
            t.start()
        self._stop.wait()
        waiting = self._jobs.close()  # also flags the running job as cancelled
        if self._say_bye:  # an orderly shutdown: answer everything, then say bye
            for job in waiting:
                self._send(error_message(job.id, schemas.CANCELLED, "the backend is shutting down"))
            worker.join(WORKER_JOIN_S)
            if worker.is_alive():
                log.warning("the engine did not stop within %.0f s; leaving anyway", WORKER_JOIN_S)
            self._send(Message("bye"))
        # Otherwise nobody is listening (input closed, pipe broken) or the stream is lost: the
        # caller exits the process at once, running engine call included.
        return self._exit_code

    def idle(self) -> bool:
        """No request waiting or running (its reader may still be waiting for bytes)."""
        return self._jobs.idle()

    def _finish(self, code: int = EXIT_OK, bye: bool = False) -> None:
        """End the conversation with exit status ``code``, unless a failure status was set before."""
        with self._finish_lock:
            if self._stop.is_set():
                return
            if self._exit_code == EXIT_OK:
                self._exit_code = code
            self._say_bye = bye
            self._stop.set()

    def _fail(self, code: int) -> None:
        """Record a failure status before telling the client: its reply (often ``shutdown``) comes
        back fast, and must not turn the failure into an orderly exit."""
        with self._finish_lock:
            if not self._stop.is_set():
                self._exit_code = code

    def _load(self, started: float) -> None:
        try:
            engine = self._load_engine()
            models = list(engine.models())
        except BaseException as e:  # torch missing, bad weights folder, ...: tell the client, then leave
            log.exception("cannot load the engine")
            self._hello.wait()
            text = f"cannot load the reconstruction engine: {type(e).__name__}: {e}"
            self._fail(EXIT_ENGINE_UNAVAILABLE)
            self._send(error_message(None, schemas.ENGINE_UNAVAILABLE, text, fatal=True))
            self._finish(EXIT_ENGINE_UNAVAILABLE)
            return
        self._engine, self._models = engine, models
        log.info("engine ready in %.2f s: %d model(s)", time.perf_counter() - started, len(models))
        self._hello.wait()
        if self._stop.is_set():
            return
        ready = {
            "protocol_version": PROTOCOL_VERSION,
            "backend_version": __version__,
            "device": str(getattr(engine, "device", "unknown")),
            "models": [_model_entry(m) for m in models],
            "pid": os.getpid(),
            "max_payload_bytes": self._max_payload_bytes,
        }
        self._send(Message("ready", None, ready))
        self._engine_ready.set()
        # What the engine can defer past ``ready`` (imports, tables) it does now, while the user
        # is still choosing what to reconstruct; a request that comes first simply waits for it.
        try:
            engine.warm_up()
        except Exception:  # the first request will meet (and report) the same problem
            log.exception("warming up the engine failed")

    # -- output ------------------------------------------------------------------------------------------
    def _send(self, message: Message) -> bool:
        """Write one message; on a broken pipe the client is gone, so the server stops quietly.

        A fatal error or ``bye`` is the last message ever written: a reply that another thread
        finishes afterwards (the engine, the loader's ``ready``) is dropped, so the client never
        reads past the end of the conversation.
        """
        last = message.type == "bye" or (message.type == "error" and bool(message.fields.get("fatal")))
        try:
            parts = encode(message)
        except MemoryError:  # too little memory left for the reply: a short error still fits
            log.error("no memory to encode a %r reply", message.type)
            if message.type == "error":
                return False
            text = "out of memory: cannot encode the reply"
            return self._send(error_message(message.id, schemas.OUT_OF_MEMORY, text))
        except (ValueError, MessageError) as e:  # a reply that does not fit the protocol is our bug
            log.exception("cannot encode a %r reply", message.type)
            if message.type == "error":
                return False
            return self._send(error_message(message.id, schemas.INTERNAL, f"cannot encode the reply: {e}"))
        try:
            with self._write_lock:
                if self._sealed:
                    return False
                self._sealed = last
                write_parts(self._out, parts)  # type: ignore[arg-type]
        except (OSError, ValueError):
            if not self._stop.is_set():
                log.info("the client closed its end of the pipe; stopping")
            self._finish(EXIT_OK)
            return False
        return True

    # -- input -------------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    message = self._reader.read()
                except MessageError as e:
                    log.warning("skipped a frame: %s (%s)", e, e.code)
                    self._send(error_message(e.request_id, e.code, str(e)))
                    continue
                if message is None:
                    log.info("input closed; stopping")
                    self._finish(EXIT_OK)
                    return
                self._on_message(message)
        except FrameError as e:
            log.error("unreadable input stream, exiting: %s", e)
            self._fail(EXIT_BAD_STREAM)
            self._send(error_message(None, e.code, str(e), fatal=True))
            self._finish(EXIT_BAD_STREAM)
        except OSError as e:
            log.info("input failed (%s); stopping", e)
            self._finish(EXIT_OK)
        except BaseException as e:  # never leave the process without a reader
            # the position in the stream is unknown now, so no further frame can be trusted
            log.exception("reader failed")
            self._fail(EXIT_BAD_STREAM)
            code = schemas.OUT_OF_MEMORY if isinstance(e, MemoryError) else schemas.INTERNAL
            text = f"the backend cannot read on: {type(e).__name__}"
            self._send(error_message(None, code, text, fatal=True))
            self._finish(EXIT_BAD_STREAM)

    def _on_message(self, message: Message) -> None:
        """Act on a control message at once (``self._control``); queue a request for the worker."""
        if message.type not in BEFORE_HELLO and not self._hello.is_set():
            self._send(error_message(message.id, schemas.HANDSHAKE_REQUIRED, "send 'hello' first"))
            return
        control = self._control.get(message.type)
        if control is not None:
            control(message)
        elif message.id is not None and self._jobs.in_flight(message.id):
            # Not answered under that id: the reply would be taken for the request that owns it.
            text = f"'{message.type}' reuses id {message.id} of a request in flight; ignored"
            self._send(error_message(None, schemas.BAD_MESSAGE, text))
        else:
            for old in self._jobs.put(Job(message)):
                text = f"superseded by extract request {message.id} of the same field"
                self._send(error_message(old.id, schemas.SUPERSEDED, text))

    def _on_hello(self, message: Message) -> None:
        theirs = message.fields["protocol_version"]
        if theirs != PROTOCOL_VERSION:
            text = f"client speaks protocol {theirs}, this backend speaks {PROTOCOL_VERSION}"
            self._fail(EXIT_BAD_STREAM)
            self._send(error_message(None, schemas.VERSION_MISMATCH, text, fatal=True))
            self._finish(EXIT_BAD_STREAM)
            return
        log.info("client %r says hello (protocol %d)", message.fields.get("client", ""), theirs)
        self._hello.set()

    def _on_shutdown(self, message: Message) -> None:
        self._finish(EXIT_OK, bye=True)

    def _on_cancel(self, message: Message) -> None:
        assert message.id is not None
        waiting = self._jobs.cancel(message.id)
        if waiting is not None:
            self._send(error_message(waiting.id, schemas.CANCELLED, "cancelled before it started"))

    # -- work --------------------------------------------------------------------------------------------
    def _work_loop(self) -> None:
        while not self._engine_ready.is_set():  # requests queue up while the engine loads
            if self._stop.wait(0.05):
                return
        while (job := self._jobs.take()) is not None:
            try:
                reply = self._answer(job)
            finally:
                self._jobs.done(job)
            self._send(reply)

    def _answer(self, job: Job) -> Message:
        """The reply to ``job``: its result, or the error it ended with. Never raises."""
        try:
            return self._run(job)
        except Exception as e:  # every failure becomes an answer; the worker goes on
            try:
                code, text = classify(e)
                if code == schemas.INTERNAL:
                    log.exception("request %d (%s) failed", job.id, job.type)
                else:
                    log.info("request %d (%s): %s", job.id, job.type, text)
            except MemoryError:  # not even enough memory to describe the failure
                code, text = schemas.OUT_OF_MEMORY, "out of memory"
        # out of the except block: the traceback, and the arrays its frames hold, are gone
        if code == schemas.OUT_OF_MEMORY:
            free_device_cache()
        return error_message(job.id, code, text)

    def _run(self, job: Job) -> Message:
        engine = self._engine
        assert engine is not None
        handler = self._handlers.get(job.type)
        if handler is None:  # the reader only queues the types that have a handler
            raise RequestError(schemas.UNKNOWN_MESSAGE, f"cannot run {job.type!r}")
        started = time.perf_counter()
        reply = handler(engine, job)
        if isinstance(reply, Message):
            return reply
        log.info("request %d (%s) done in %.3f s", job.id, job.type, time.perf_counter() - started)
        return result_message(job.id, reply)

    def _reconstruct(self, engine: Engine, job: Job) -> MeshResult:
        fields = job.message.fields
        model = choose_model(self._models, fields.get("model"), fields.get("kind"))
        observation = observation_from_arrays(model.kind, job.message.arrays)
        options = options_from_fields(fields.get("options", {}))
        progress, cancel = self._progress_for(job), job.cancelled.is_set
        return engine.reconstruct(model.name, observation, options, progress=progress, cancel=cancel)

    def _sample(self, engine: Engine, job: Job) -> MeshResult:
        fields = job.message.fields
        model = choose_model(self._models, fields.get("model"), "unconditional")
        options = options_from_fields(fields.get("options", {}))
        seed = int(fields.get("seed", options.seed))
        progress, cancel = self._progress_for(job), job.cancelled.is_set
        return engine.sample(model.name, seed, options, progress=progress, cancel=cancel)

    def _extract(self, engine: Engine, job: Job) -> MeshResult:
        field_id, tau = job.message.fields["field_id"], float(job.message.fields["tau"])
        progress, cancel = self._progress_for(job), job.cancelled.is_set
        try:
            return engine.extract(field_id, tau, progress=progress, cancel=cancel)
        except FieldGoneError:
            raise RequestError(
                schemas.UNKNOWN_FIELD, f"no cached field {field_id!r} (released, evicted or never made)"
            ) from None

    def _release(self, engine: Engine, job: Job) -> Message:
        field_id = job.message.fields.get("field_id")
        try:
            engine.release(field_id)  # releasing everything also empties the device's cache
        except FieldGoneError:
            raise RequestError(schemas.UNKNOWN_FIELD, f"no cached field {field_id!r}") from None
        return Message("released", job.id, {"field_id": field_id})

    def _echo(self, engine: Engine, job: Job) -> Message:
        return Message("echo", job.id, {"data": job.message.fields.get("data")}, job.message.arrays)

    def _progress_for(self, job: Job) -> ProgressFn:
        """A progress callback that streams to the client, at most every PROGRESS_INTERVAL_S per stage."""
        last: dict[str, Any] = {"stage": None, "at": 0.0}

        def progress(stage: str, fraction: float) -> None:
            now = time.perf_counter()
            new_stage = stage != last["stage"]
            if not (new_stage or fraction >= 1.0 or now - last["at"] >= PROGRESS_INTERVAL_S):
                return
            last["stage"], last["at"] = stage, now
            fraction = min(max(float(fraction), 0.0), 1.0)
            self._send(Message("progress", job.id, {"stage": str(stage), "fraction": fraction}))

        return progress
