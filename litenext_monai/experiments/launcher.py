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
from typing import IO, Any

__all__ = ["BundleLauncher", "PRELOAD"]

#: Modules the server imports once (everything a bundle run of this package touches).
PRELOAD = ("torch", "monai.bundle", "monai.handlers", "ignite.engine", "mlflow", "litenext_monai.engines")

_BUNDLE_PREFIX = ("-m", "monai.bundle")


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


def serve(preload: Sequence[str]) -> None:  # pragma: no cover - runs in the server process
    """The server: import ``preload``, then fork one child per JSON request read from stdin.

    Protocol (one JSON object per line): request ``{"argv", "cwd", "env", "stdout", "stderr"}``;
    replies ``{"pid": N}`` once the child exists, then ``{"exit": status}`` (negative: killed by
    that signal, as :attr:`subprocess.Popen.returncode`). End of input stops the server.
    """
    import importlib

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints of the imports go to stderr, not into the protocol
    for name in preload:
        importlib.import_module(name)
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                protocol.close()
                _child(request["argv"], request["cwd"], request["env"], request["stdout"], request["stderr"])
            finally:
                os._exit(1)
        protocol.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        protocol.write(json.dumps({"exit": os.waitstatus_to_exitcode(status)}) + "\n")


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
        server = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        reply = self._read(server, None)
        if not reply.get("ready"):
            server.kill()
            raise RuntimeError(f"the bundle launcher did not start: {reply}")
        self._server = server
        return server

    @staticmethod
    def _read(server: subprocess.Popen, timeout: float | None) -> dict[str, Any]:
        stream: IO[str] = server.stdout  # type: ignore[assignment]
        if timeout is not None:
            ready, _, _ = select.select([stream], [], [], max(0.0, timeout))
            if not ready:
                raise subprocess.TimeoutExpired("bundle launcher", timeout)
        line = stream.readline()
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
        request = {"argv": list(cmd[3:]), "cwd": cwd, "env": env, "stdout": stdout, "stderr": stderr}
        with self._lock:
            server = self._start()
            server.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
            server.stdin.flush()  # type: ignore[union-attr]
            pid = int(self._read(server, None)["pid"])
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                reply = self._read(server, None if deadline is None else deadline - time.monotonic())
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._read(server, None)
                raise subprocess.TimeoutExpired(list(cmd), timeout or 0.0) from None
            return int(reply["exit"])

    @staticmethod
    def _subprocess(
        cmd: Sequence[str], stdout: str, stderr: str, cwd: str, env: dict[str, str], timeout: float | None
    ) -> int:
        with open(stdout, "a", encoding="utf-8") as out:
            if stderr == stdout:
                return subprocess.run(
                    list(cmd),
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                ).returncode
            with open(stderr, "a", encoding="utf-8") as err:
                return subprocess.run(
                    list(cmd), cwd=cwd, env=env, stdout=out, stderr=err, timeout=timeout, check=False
                ).returncode
