"""Shared test helpers.

Integration tests need system tools or servers. Locally they skip with the reason; with
``REQUIRE_INTEGRATION=1`` (set by ``.ci/run``) a missing tool is a failure instead.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_INTEGRATION = os.environ.get("REQUIRE_INTEGRATION", "") not in ("", "0", "false", "False")


def skip_or_fail(reason: str) -> None:
    """Skip the calling test locally; fail it when integration tests are required."""
    if REQUIRE_INTEGRATION:
        pytest.fail(f"REQUIRE_INTEGRATION=1 but {reason}")
    pytest.skip(reason)


def require_executable(name: str) -> str:
    """Return the path of ``name`` on PATH, or skip/fail the test naming what is missing."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"the executable {name!r} is not on PATH")
    return path
