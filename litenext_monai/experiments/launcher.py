"""Run many ``python -m monai.bundle ...`` commands without paying MONAI's import each time.

Importing ``monai.bundle`` with torch, Ignite and MLflow takes 10–13 s of CPU on a 2-core machine,
often longer than the tiny training or evaluation it then runs. :class:`BundleLauncher` starts one
server process that imports them once and never computes, and forks one child per command from
it (the "zygote" of Android and of ``multiprocessing``'s fork server, without re-importing the
caller's main module). The child is a fresh process as far as the command can tell: it gets its
own working directory, environment, argument vector, random seeds, torch thread count and
standard streams, runs ``monai.bundle``'s ``__main__`` as the command line would (Python Fire),
runs the ``atexit`` handlers and exits with the command's status.

Without ``os.fork`` (Windows), or with ``fresh=True``, a command runs as an ordinary subprocess.
``scripts/compare.py`` and the test suite launch their bundle runs through it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BundleLauncher", "PRELOAD"]

#: Modules the server imports once (everything a bundle run of this package touches).
PRELOAD = ("torch", "monai.bundle", "monai.handlers", "ignite.engine", "mlflow", "litenext_monai.engines")

_BUNDLE_PREFIX = ("-m", "monai.bundle")
#: Seconds past a command's timeout after which a silent server counts as hung (it kills the
#: command itself at the timeout, so only a broken server is ever this late).
_SERVER_GRACE_S = 60.0


def _child(
    argv: list[str], cwd: str, env: dict[str, str], stdout_path: str, stderr_path: str
) -> None:  # pragma: no cover - runs in the forked child
    """Body of a launched command in a child forked from the server; never returns."""
    import atexit
    import random
    import runpy
    import warnings

    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # Interpreter start-up settings that a fresh process would take from its environment.
    if env.get("PYTHONWARNINGS"):
        for spec in env["PYTHONWARNINGS"].split(","):
            if spec.strip() == "ignore":
                warnings.simplefilter("ignore")
    import numpy as np
    import torch

    threads = env.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))  # the fork server read OMP_NUM_THREADS when torch loaded
    # A forked child inherits the server's generator states: reseed as a new process would be.
    random.seed()
    np.random.seed(int.from_bytes(os.urandom(4), "little"))
    torch.seed()
    sys.argv = [sys.executable, *argv]
    code: int | str | None = 0
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads, as at exit
        atexit._run_exitfuncs()  # e.g. MLflow's end-of-run flush
    except BaseException:
        pass
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _LineReader:
    """Read ``\n``-terminated lines from a raw file descriptor, with an optional deadline.

    ``select()`` on a buffered file object misses lines that its buffer already holds (two replies
    that arrived together), so this reader keeps its own buffer: it waits on the descriptor only
    when no complete line is buffered, and reads with ``os.read`` (whatever is there, never more
    than a pipe holds).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""

    def readline(self, deadline: float | None = None) -> bytes | None:
        """The next line (without its ``\n``); ``b""`` at end of file; ``None`` at the deadline.

        Args:
            deadline: ``time.monotonic()`` value after which to give up; ``None`` waits forever.
        """
        while b"\n" not in self._buffer:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                ready = remaining > 0 and select.select([self.fd], [], [], remaining)[0]
                if not ready:
                    return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return b""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def fill(self) -> bool:
        """Read once what the descriptor has (it must be readable); ``False`` at end of file."""
        chunk = os.read(self.fd, 65536)
        self._buffer += chunk
        return bool(chunk)


def _write_line(fd: int, message: Mapping[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has ended, WITHOUT reaping it (its pid and process group stay reserved)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pid: int) -> None:
    """SIGKILL the process group of the not-yet-reaped child ``pid`` (its own group: pgid == pid)."""
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
            return
        except (ProcessLookupError, PermissionError):
            continue


def _wait_child(pid: int, timeout: float | None, client: _LineReader) -> tuple[int, bool]:
    """Wait for child ``pid``; at ``timeout`` seconds kill its whole process group.

    The child is reaped only here, after any signal, so no signal can reach a recycled pid. The
    wait also ends (with the group killed) if the client closes the protocol (it has gone away).

    Returns:
        ``(exit status, timed out)``; the status is negative when a signal ended the child.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        pidfd: int | None = os.pidfd_open(pid)  # Linux >= 5.3: readable when the child exits
    except (AttributeError, OSError):
        pidfd = None
    timed_out = False
    try:
        while not _exited(pid):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                timed_out = True
                _kill_group(pid)
                break
            step = 0.05 if pidfd is None else remaining
            if step is not None and remaining is not None:
                step = min(step, remaining)
            watched = [client.fd] if pidfd is None else [client.fd, pidfd]
            ready = select.select(watched, [], [], step)[0]
            if client.fd in ready and not client.fill():
                _kill_group(pid)  # the client went away: do not leave its command running
                break
    except BaseException:
        _kill_group(pid)  # e.g. KeyboardInterrupt: the child is in its own group, Ctrl-C missed it
        os.waitpid(pid, 0)
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), timed_out


def serve(preload: Sequence[str]) -> None:  # pragma: no cover - runs in the server process
    """The server: import ``preload``, then fork one child per JSON request read from stdin.

    Protocol (one JSON object per line): request ``{"argv", "cwd", "env", "stdout", "stderr",
    "timeout"}``; replies ``{"pid": N}`` once the child exists, then ``{"exit": status,
    "timed_out": bool}`` (status negative: killed by that signal, as
    :attr:`subprocess.Popen.returncode`). Each child leads its own process group; at its timeout
    the server SIGKILLs that whole group (DataLoader workers and any other grandchildren) before
    it reaps the child. End of input stops the server.
    """
    import importlib

    protocol = os.dup(1)
    os.dup2(2, 1)  # stray prints of the imports go to stderr, not into the protocol
    for name in preload:
        importlib.import_module(name)
    requests = _LineReader(0)
    _write_line(protocol, {"ready": True})
    while True:
        line = requests.readline()
        if not line:
            break
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                os.setpgid(0, 0)
                os.close(protocol)
                _child(request["argv"], request["cwd"], request["env"], request["stdout"], request["stderr"])
            finally:
                os._exit(1)
        try:
            os.setpgid(pid, pid)  # also here: whichever of parent and child runs first sets it
        except OSError:
            pass  # the child already set it (EACCES after exec) or has already exited
        _write_line(protocol, {"pid": pid})
        code, timed_out = _wait_child(pid, request.get("timeout"), requests)
        try:
            _write_line(protocol, {"exit": code, "timed_out": timed_out})
        except BrokenPipeError:
            break  # the client has gone away


class BundleLauncher:
    """Launch ``[sys.executable, "-m", "monai.bundle", ...]`` commands from a pre-imported server.

    The server starts on the first bundle command and stops with this object (or at exit). One
    command runs at a time per launcher; calls from several threads are serialised.

    Args:
        preload: modules the server imports before forking (default :data:`PRELOAD`).
        fresh: run every command as an ordinary subprocess (no server).

    Example::

        launcher = BundleLauncher()
        code = launcher.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", cfg],
                            stdout=Path("train.log"))
    """

    def __init__(self, preload: Sequence[str] = PRELOAD, fresh: bool = False) -> None:
        self.preload = list(preload)
        self.fresh = fresh or not hasattr(os, "fork")
        self._server: subprocess.Popen | None = None
        self._replies = _LineReader(-1)
        self._lock = threading.Lock()

    @staticmethod
    def is_bundle_command(cmd: Sequence[str]) -> bool:
        """Whether ``cmd`` is ``<this python> -m monai.bundle ...``."""
        if len(cmd) <= 2 or tuple(cmd[1:3]) != _BUNDLE_PREFIX:
            return False
        try:
            return os.path.samefile(cmd[0], sys.executable)
        except OSError:
            return False

    def _start(self) -> subprocess.Popen:
        if self._server is not None and self._server.poll() is None:
            return self._server
        code = f"from litenext_monai.experiments.launcher import serve; serve({self.preload!r})"
        server = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._replies = _LineReader(server.stdout.fileno())  # type: ignore[union-attr]
        reply = self._read(server, None)
        if not reply.get("ready"):
            server.kill()
            raise RuntimeError(f"the bundle launcher did not start: {reply}")
        self._server = server
        return server

    def _read(self, server: subprocess.Popen, deadline: float | None) -> dict[str, Any]:
        line = self._replies.readline(deadline)
        if line is None:
            # The server enforces command timeouts itself; silence past its grace means it hangs.
            server.kill()
            server.wait()
            self._server = None
            raise RuntimeError("the bundle launcher server stopped answering; it was killed")
        if not line:
            raise RuntimeError(f"the bundle launcher server ended (exit status {server.wait()})")
        return json.loads(line)

    def close(self) -> None:
        """Stop the server (it also stops when this process ends)."""
        server, self._server = self._server, None
        if server is not None and server.poll() is None:
            server.stdin.close()  # type: ignore[union-attr]
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def run(
        self,
        cmd: Sequence[str],
        stdout: str | os.PathLike,
        stderr: str | os.PathLike | None = None,
        cwd: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Run ``cmd`` to completion and return its exit status.

        Args:
            cmd: a command line; only ``<python> -m monai.bundle ...`` uses the server, any other
                runs as a subprocess.
            stdout: file receiving the standard output (appended to).
            stderr: file receiving the standard error; ``None``: the same file as ``stdout``.
            cwd: working directory (default: the current one).
            env: the complete environment (default: this process's).
            timeout: seconds; the command is killed after it and :class:`subprocess.TimeoutExpired` raised.
        """
        cwd = str(Path(cwd if cwd is not None else os.getcwd()).resolve())
        env = dict(os.environ if env is None else env)
        stdout = str(Path(stdout).resolve())
        stderr = stdout if stderr is None else str(Path(stderr).resolve())
        if self.fresh or not self.is_bundle_command(cmd):
            return self._subprocess(cmd, stdout, stderr, cwd, env, timeout)
        request = {
            "argv": list(cmd[3:]),
            "cwd": cwd,
            "env": env,
            "stdout": stdout,
            "stderr": stderr,
            "timeout": timeout,
        }
        with self._lock:
            server = self._start()
            server.stdin.write((json.dumps(request) + "\n").encode())  # type: ignore[union-attr]
            server.stdin.flush()  # type: ignore[union-attr]
            self._read(server, None)  # {"pid": N}: the child exists
            # The server kills the command at its timeout; this deadline only guards against a hung server.
            deadline = None if timeout is None else time.monotonic() + timeout + _SERVER_GRACE_S
            reply = self._read(server, deadline)
        if reply.get("timed_out"):
            raise subprocess.TimeoutExpired(list(cmd), timeout or 0.0)
        return int(reply["exit"])

    @staticmethod
    def _subprocess(
        cmd: Sequence[str], stdout: str, stderr: str, cwd: str, env: dict[str, str], timeout: float | None
    ) -> int:
        """Run ``cmd`` as a subprocess leading its own process group; a timeout kills the whole group."""
        with open(stdout, "a", encoding="utf-8") as out:
            err = subprocess.STDOUT if stderr == stdout else open(stderr, "a", encoding="utf-8")  # noqa: SIM115
            try:
                process = subprocess.Popen(
                    list(cmd), cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
                )
            finally:
                if err is not subprocess.STDOUT:
                    err.close()  # type: ignore[union-attr]
            try:
                return process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process.pid)  # not reaped yet: wait() timed out, so the pid is still ours
                process.wait()
                raise subprocess.TimeoutExpired(list(cmd), timeout or 0.0) from None
            except BaseException:
                _kill_group(process.pid)
                process.wait()
                raise
