"""io.atomic.atomic_write: the ``mode`` parameter, and the default permissions of a new file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from litenext_monai.io.atomic import TEMP_PREFIX, atomic_write


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_mode_is_applied_whatever_the_umask(tmp_path):
    old = os.umask(0o022)  # the usual umask: a new file would be 0644
    try:
        private = atomic_write(tmp_path / "private.json", lambda tmp: tmp.write_text("{}"), mode=0o600)
        shared = atomic_write(
            tmp_path / "shared.json", lambda tmp: tmp.write_text("{}"), mode=0o640, fsync=True
        )
    finally:
        os.umask(old)
    assert _mode(private) == 0o600 and private.read_text() == "{}"
    assert _mode(shared) == 0o640
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))  # no temporary left behind


def test_default_mode_is_that_of_a_new_file_under_the_import_time_umask(tmp_path):
    # A fresh interpreter with umask 022 at import: the default stays 0o666 & ~0o022 = 0o644 (as
    # before the ``mode`` parameter existed), even if the umask changes afterwards.
    script = textwrap.dedent(
        f"""
        import os
        os.umask(0o022)
        from litenext_monai.io.atomic import atomic_write
        os.umask(0o077)
        path = atomic_write({str(tmp_path / "plain.txt")!r}, lambda tmp: tmp.write_text("x"))
        print(oct(os.stat(path).st_mode & 0o777))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0o644"


def test_mode_replaces_an_existing_file_and_a_failed_write_leaves_it(tmp_path):
    target = tmp_path / "job.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    atomic_write(target, lambda tmp: tmp.write_text("new"), mode=0o600)
    assert target.read_text() == "new" and _mode(target) == 0o600

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken, mode=0o600)
    assert target.read_text() == "new" and _mode(target) == 0o600
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))
