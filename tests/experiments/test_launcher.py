"""BundleLauncher: bundle commands forked from a pre-imported server behave like fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from litenext_monai.experiments.launcher import BundleLauncher

# A bundle whose "run" writes what the process sees: its cwd, an environment variable, torch's
# thread count and one draw from each unseeded generator.
PROBE = {
    "imports": ["$import os", "$import json", "$import random", "$import numpy", "$import torch"],
    "out": "probe.json",
    "run": [
        "$open(@out, 'w').write(json.dumps({'cwd': os.getcwd(), 'probe': os.environ.get('PROBE'),"
        " 'threads': torch.get_num_threads(), 'random': random.random(), 'numpy': float(numpy.random.rand()),"
        " 'torch': float(torch.rand(1))}))",
        "$print('probe done')",
    ],
}


@pytest.fixture(scope="module")
def launcher():
    launched = BundleLauncher(preload=("torch", "monai.bundle"))
    yield launched
    launched.close()


def _probe(launcher: BundleLauncher, folder: Path, config: Path, **env: str) -> dict:
    folder.mkdir()
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config)]
    code = launcher.run(cmd, stdout=folder / "log.txt", cwd=folder, env={**_base_env(), **env})
    assert code == 0, (folder / "log.txt").read_text()
    assert "probe done" in (folder / "log.txt").read_text()
    return json.loads((folder / "probe.json").read_text())


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("PROBE", "OMP_NUM_THREADS")}


def test_children_get_their_own_cwd_env_threads_and_seeds(launcher, tmp_path):
    config = tmp_path / "probe.json"
    config.write_text(json.dumps(PROBE))
    first = _probe(launcher, tmp_path / "a", config, PROBE="one", OMP_NUM_THREADS="1")
    second = _probe(launcher, tmp_path / "b", config, PROBE="two")
    assert first["cwd"] == str((tmp_path / "a").resolve()) and first["probe"] == "one"
    assert second["cwd"] == str((tmp_path / "b").resolve()) and second["probe"] == "two"
    assert first["threads"] == 1
    for generator in ("random", "numpy", "torch"):
        assert first[generator] != second[generator], generator  # reseeded like a new process


def test_exit_status_output_and_timeout(launcher, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"run": ["$1 / 0"]}))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bad)]
    code = launcher.run(cmd, stdout=tmp_path / "out.txt", stderr=tmp_path / "err.txt")
    assert code != 0
    assert "ZeroDivisionError" in (tmp_path / "err.txt").read_text()
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps({"imports": ["$import time"], "run": ["$time.sleep(60)"]}))
    with pytest.raises(subprocess.TimeoutExpired):
        launcher.run(
            [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(slow)],
            stdout=tmp_path / "slow.txt",
            timeout=3,
        )
    # The server survives a killed child and serves the next command.
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"run": ["$print('still serving')"]}))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(good)]
    assert launcher.run(cmd, stdout=tmp_path / "good.txt") == 0
    assert "still serving" in (tmp_path / "good.txt").read_text()


def test_other_commands_and_fresh_mode_run_as_subprocesses(tmp_path):
    fresh = BundleLauncher(fresh=True)
    assert fresh.run([sys.executable, "-c", "print('plain')"], stdout=tmp_path / "p.txt") == 0
    assert (tmp_path / "p.txt").read_text() == "plain\n"
    assert not BundleLauncher.is_bundle_command(["python3-not-this-one", "-m", "monai.bundle", "run"])
    assert BundleLauncher.is_bundle_command([sys.executable, "-m", "monai.bundle", "run"])
    assert fresh._server is None  # never started a server


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as dead)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - the pid was reused by another user's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust os.kill
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_quick_commands_with_big_output_are_never_reported_as_timed_out(launcher, tmp_path):
    # A command that writes a lot and exits at once, and a child that fails before it runs anything
    # (its log path is a folder) and exits within microseconds of its fork: the server's "pid" and
    # "exit" replies then arrive together, which is where a select() on the buffered reply pipe
    # saw nothing left to read. A busy thread holding the GIL (long switch interval) delays the
    # caller between sending a request and reading its replies, so both replies are waiting.
    import threading

    loud = tmp_path / "loud.json"
    loud.write_text(json.dumps({"run": ["$print('x' * 200000)"]}))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(loud)]
    (tmp_path / "folder").mkdir()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    interval = sys.getswitchinterval()
    spinner = threading.Thread(target=spin, daemon=True)
    sys.setswitchinterval(0.5)
    spinner.start()
    try:
        for i in range(2):
            assert launcher.run(cmd, stdout=tmp_path / f"loud{i}.txt", timeout=30) == 0
            assert len((tmp_path / f"loud{i}.txt").read_text()) > 200000
        for _ in range(24):
            assert launcher.run(cmd, stdout=tmp_path / "folder", timeout=5) != 0
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(interval)


def test_timeout_kills_the_whole_process_group_and_the_server_keeps_serving(launcher, tmp_path):
    # The command starts a grandchild (as DataLoader workers are) and hangs; the timeout must
    # kill both.
    pid_file = tmp_path / "grandchild.pid"
    hang = tmp_path / "hang.json"
    hang.write_text(
        json.dumps(
            {
                "imports": ["$import subprocess", "$import sys", "$import time"],
                "run": [
                    "$open(" + json.dumps(str(pid_file)) + ", 'w').write(str(subprocess.Popen("
                    "[sys.executable, '-c', 'import time; time.sleep(120)']).pid))",
                    "$time.sleep(120)",
                ],
            }
        )
    )
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(hang)]
    with pytest.raises(subprocess.TimeoutExpired):
        launcher.run(cmd, stdout=tmp_path / "hang.txt", timeout=8)
    grandchild = int(pid_file.read_text())
    import time

    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(grandchild)
    if alive:
        import os
        import signal

        os.kill(grandchild, signal.SIGKILL)  # do not leave it behind when the test fails
    assert not alive, "the timed-out command's grandchild survived"
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"run": ["$print('still serving')"]}))
    good_cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(good)]
    assert launcher.run(good_cmd, stdout=tmp_path / "good.txt", timeout=60) == 0
    assert "still serving" in (tmp_path / "good.txt").read_text()


def test_fresh_subprocess_timeout_kills_grandchildren_too(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(120)\n"
    )
    fresh = BundleLauncher(fresh=True)
    with pytest.raises(subprocess.TimeoutExpired):
        fresh.run([sys.executable, "-c", script], stdout=tmp_path / "out.txt", timeout=5)
    import time

    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(grandchild)
    if alive:
        import os
        import signal

        os.kill(grandchild, signal.SIGKILL)
    assert not alive, "the timed-out subprocess's grandchild survived"
