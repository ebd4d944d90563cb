"""Segmentation in a worker process, so that a crash or an OOM kill never takes the listener down.

:class:`SegmentationWorker` starts one child process (``multiprocessing`` with the
``forkserver`` or ``spawn`` context: no inherited threads or sockets of the listener), which builds the
segmenter once (e.g. loads the checkpoint) and then serves one series after another over a pipe.
With the default ``forkserver`` context the children are forked from a clean server process
that imported the node's libraries once (never from the listener, whose threads and sockets they
do not inherit).
When the child dies (a segfault, ``os._exit``, the kernel's OOM killer, a timeout) the parent
raises :class:`SegmentationError` with ``kind="crash"`` and starts a fresh child for the next
request. Errors the segmenter raises are classified in the child:

* ``transient``: :class:`OSError` (a full disk, ``ENOSPC``; a file briefly unavailable),
  :class:`MemoryError` and torch's ``OutOfMemoryError``: worth retrying later;
* ``permanent``: everything else, notably :class:`ValueError` (unreadable or invalid DICOM, what the
  model pipeline rejects): retrying cannot help.

:class:`InProcessWorker` has the same interface and runs the segmenter in the calling thread
(no crash isolation), for segmenters that cannot be pickled or for embedding.

The child logs to stderr through its own :class:`~litenext_monai.dicom_node.redact.PatientRedactor`,
which learns the patient strings of each series before segmenting it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

__all__ = [
    "CRASH",
    "PERMANENT",
    "TRANSIENT",
    "InProcessWorker",
    "SegmentationError",
    "SegmentationWorker",
    "SegmenterFactory",
    "classify_error",
]

logger = logging.getLogger(__name__)

TRANSIENT = "transient"
PERMANENT = "permanent"
CRASH = "crash"

#: ``segmenter(instance_files, output_path)`` writes one SEG for the instances of one series.
Segmenter = Callable[[Sequence[Path], Path], Path]


class SegmentationError(Exception):
    """A series was not segmented.

    Attributes:
        kind: :data:`TRANSIENT`, :data:`PERMANENT` or :data:`CRASH` (the worker died).
        type_name: the class name of the original exception (or ``"WorkerDied"``).
        message: its message (may quote patient data: redact before logging or storing).
    """

    def __init__(self, kind: str, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.kind = kind
        self.type_name = type_name
        self.message = message


def classify_error(err: BaseException) -> str:
    """:data:`TRANSIENT` for out-of-memory and operating-system errors, else :data:`PERMANENT`."""
    if isinstance(err, (MemoryError, OSError)) or type(err).__name__ == "OutOfMemoryError":
        return TRANSIENT
    return PERMANENT


def _build_plain(segmenter: Segmenter) -> Segmenter:
    return segmenter


class SegmenterFactory:
    """A picklable recipe for a segmenter, built once inside the worker process.

    ``SegmenterFactory(checkpoint_segmenter, "model.pt", device="cpu")`` calls
    ``checkpoint_segmenter("model.pt", device="cpu")`` in the child. ``function`` must be
    importable (a module-level function), and the arguments picklable.
    """

    def __init__(self, function: Callable[..., Segmenter], *args: Any, **kwargs: Any) -> None:
        self.function, self.args, self.kwargs = function, args, kwargs

    @classmethod
    def of(cls, segmenter: Segmenter | SegmenterFactory) -> SegmenterFactory:
        """A factory for an already built (picklable, module-level) segmenter, or the factory itself."""
        return segmenter if isinstance(segmenter, SegmenterFactory) else cls(_build_plain, segmenter)

    def __call__(self) -> Segmenter:
        return self.function(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        return f"SegmenterFactory({getattr(self.function, '__qualname__', self.function)!r})"


def _warm_up(segmenter: Segmenter) -> None:
    from .synthetic import write_warm_up_series

    folder = Path(tempfile.mkdtemp(prefix="litenext-warm-up-"))
    start = time.perf_counter()
    try:
        files = write_warm_up_series(folder)
        segmenter(files, folder / "seg.dcm")
        logger.info("Warm-up segmentation took %.2f s", time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001 - only a speed-up; real series report their own errors
        logger.warning("Warm-up segmentation failed (%s); continuing", type(err).__name__)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


#: The worker's ``/proc/self/oom_score_adj``: when memory runs out, the kernel kills the worker
#: (which the node restarts) rather than the listener. Raising one's own score needs no privilege.
OOM_SCORE_ADJ = 500


def _prefer_oom_kill() -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write(str(OOM_SCORE_ADJ))
    except OSError:  # not Linux, or a sandbox that forbids it: only a preference
        pass


def _serve(factory: SegmenterFactory, conn: Connection, log_level: int, warm_up: bool) -> None:
    """The worker process: build the segmenter, then answer ``(files, output)`` requests until ``None``."""
    from .redact import configure_node_logging

    _prefer_oom_kill()
    redactor = configure_node_logging(log_level)
    try:
        segmenter = factory()
        if warm_up:
            _warm_up(segmenter)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which decides
        conn.send(("init-error", type(err).__name__, str(err)))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        files, output = request
        for path in files[:1]:
            redactor.add_file(path)
        try:
            segmenter([Path(f) for f in files], Path(output))
            if not Path(output).is_file():
                raise RuntimeError("the segmenter wrote no SEG")
        except Exception as err:  # noqa: BLE001 - every error goes back to the parent
            conn.send(("error", classify_error(err), type(err).__name__, str(err)))
        else:
            conn.send(("ok",))


class SegmentationWorker:
    """A restartable worker process that segments one series per :meth:`segment` call.

    Args:
        factory: builds the segmenter in the child (see :class:`SegmenterFactory`); a plain
            segmenter function is accepted when it can be pickled (module-level).
        context: ``"forkserver"`` (default: a clean server process, started once, that has
            imported the node's libraries; each worker is forked from it, so a restart after a
            crash takes milliseconds) or ``"spawn"`` (a fresh interpreter per worker, seconds).
        log_level: the child's logging level (default: the parent's root level).
        warm_up: segment a synthetic two-slice series once after each start, so that the first
            real series does not pay for one-time initialisation.
        start_timeout: seconds to wait for the child to build its segmenter.

    Raises:
        ValueError: ``factory`` cannot be pickled (a closure or a lambda).
    """

    def __init__(
        self,
        factory: SegmenterFactory | Segmenter,
        *,
        context: str = "forkserver",
        log_level: int | None = None,
        warm_up: bool = False,
        start_timeout: float = 600.0,
    ) -> None:
        self.factory = SegmenterFactory.of(factory)
        try:
            pickle.dumps(self.factory)
        except Exception as err:  # noqa: BLE001 - pickle raises several types
            raise ValueError(
                f"the segmenter {self.factory!r} cannot be sent to a worker process ({err}); use a "
                "module-level function or a SegmenterFactory, or run it in-process (InProcessWorker)"
            ) from err
        self.context = multiprocessing.get_context(context)
        if context == "forkserver":
            # The fork server imports the node's modules (pydicom, highdicom, MONAI) once; every
            # worker, including each restart after a crash, is forked from it in milliseconds.
            self.context.set_forkserver_preload([__name__])
        self.log_level = logging.getLogger().level if log_level is None else log_level
        self.warm_up = warm_up
        self.start_timeout = start_timeout
        self._process = None
        self._conn: Connection | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> None:
        """Start the child and wait until its segmenter is built.

        Raises:
            SegmentationError: the factory failed (``permanent``) or the child died (``crash``).
        """
        self.close()
        parent, child = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=_serve,
            args=(self.factory, child, self.log_level, self.warm_up),
            name="litenext-segmentation-worker",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        self.starts += 1
        reply = self._receive(self.start_timeout)
        if reply[0] == "init-error":
            self.close()
            raise SegmentationError(PERMANENT, reply[1], f"the segmenter could not be built: {reply[2]}")
        logger.info("Segmentation worker started (pid %d)", process.pid)

    def _receive(self, timeout: float | None) -> tuple:
        assert self._process is not None and self._conn is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([self._conn, self._process.sentinel], timeout=left)
            if self._conn in ready:
                try:
                    return self._conn.recv()
                except (EOFError, OSError):
                    pass  # the child closed the pipe: it is dying
            if ready or (deadline is not None and time.monotonic() >= deadline):
                timed_out = not ready
                self._process.join(1.0)
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join(5.0)
                code = self._process.exitcode
                self._drop()
                if timed_out:
                    raise SegmentationError(CRASH, "WorkerTimeout", f"no answer within {timeout:g} s; killed")
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                raise SegmentationError(CRASH, "WorkerDied", f"the segmentation worker died ({how})")

    def segment(self, files: Sequence[Path], output_path: Path, timeout: float | None = None) -> Path:
        """Segment one series in the worker (started, or restarted after a crash, as needed).

        Raises:
            SegmentationError: the segmenter failed or the worker died (it restarts on the next call).
        """
        if not self.alive():
            self.start()
        assert self._conn is not None
        try:
            self._conn.send(([str(f) for f in files], str(output_path)))
        except (OSError, ValueError):
            pass  # a dead child shows up in _receive
        reply = self._receive(timeout)
        if reply[0] == "ok":
            return Path(output_path)
        _, kind, type_name, message = reply
        raise SegmentationError(kind, type_name, message)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to exit (it finishes nothing: call between series), kill it after ``timeout``."""
        if self._process is None:
            return
        process = self._process
        try:
            assert self._conn is not None
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(5.0)
        self._drop()


class InProcessWorker:
    """The :class:`SegmentationWorker` interface, running the segmenter in the calling thread.

    No isolation: a crash of the segmenter is a crash of the node. For segmenters that cannot be
    pickled and for embedding the node in a process that has its own supervision.
    """

    def __init__(self, segmenter: Segmenter | SegmenterFactory, *, warm_up: bool = False) -> None:
        self._source = segmenter
        self._segmenter: Segmenter | None = None
        self.warm_up = warm_up
        self.starts = 0

    def alive(self) -> bool:
        return self._segmenter is not None

    def start(self) -> None:
        try:
            built = self._source() if isinstance(self._source, SegmenterFactory) else self._source
        except Exception as err:  # noqa: BLE001 - same contract as the worker process
            message = f"the segmenter could not be built: {err}"
            raise SegmentationError(PERMANENT, type(err).__name__, message) from err
        self._segmenter = built
        self.starts += 1
        if self.warm_up:
            _warm_up(built)

    def segment(self, files: Sequence[Path], output_path: Path, timeout: float | None = None) -> Path:
        if self._segmenter is None:
            self.start()
        assert self._segmenter is not None
        try:
            self._segmenter(list(files), Path(output_path))
            if not Path(output_path).is_file():
                raise RuntimeError("the segmenter wrote no SEG")
        except Exception as err:  # noqa: BLE001 - classified like the worker process does
            raise SegmentationError(classify_error(err), type(err).__name__, str(err)) from err
        return Path(output_path)

    def close(self, timeout: float = 10.0) -> None:
        self._segmenter = None
