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
