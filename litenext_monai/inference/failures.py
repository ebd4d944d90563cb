"""Visible failures for batch inference: a ``failures.csv``, a metric, and a non-zero exit.

Folder inference finishes every input it can. Each input that gets no output (unreadable,
NaN pixels, an unknown suffix, a DICOM SEG that cannot be built, ...) is recorded once with its
reason; the report is written atomically as ``<prediction_dir>/failures.csv`` (``input,reason``)
when the evaluator's epoch completes, its count is set as the metric ``failures`` (so MLflow
logs it when tracking is on), and :meth:`FailureReport.raise_if_failed`, the bundle's last
``run`` step, ends the command with a non-zero status and a summary when anything failed.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import ignite.distributed as idist
from monai.utils import min_version, optional_import

from litenext_monai.io import atomic_write

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
    Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["FailureReport", "BatchFailedError"]

logger = logging.getLogger(__name__)


class BatchFailedError(SystemExit):
    """Some inputs of a batch got no output (the message says how many and where the report is).

    A ``SystemExit``: raised as the bundle's last ``run`` step it passes through MONAI's expression
    evaluation, so the command prints the summary (no traceback) and exits with status 1.
    """


class FailureReport:
    """Collect per-input failures of a batch and report them.

    Args:
        output_dir: folder of ``failures.csv`` (the prediction folder).
        filename: name of the report.
        metric_name: engine metric set to the number of failures.

    Attributes:
        failures: ``(input, reason)`` in the order they happened.
        total: number of inputs of the batch (set by whoever lists them).
    """

    def __init__(
        self, output_dir: str | os.PathLike, filename: str = "failures.csv", metric_name: str = "failures"
    ) -> None:
        self.path = Path(output_dir) / filename
        self.metric_name = metric_name
        self.failures: list[tuple[str, str]] = []
        self.total = 0
        self._finalizers: list[Callable[[], None]] = []
        self._finished = False

    def add(self, source: str | os.PathLike, reason: str) -> None:
        """Record that ``source`` got no output, and log it (the reason names the file and the problem)."""
        reason = " ".join(str(reason).split())
        self.failures.append((str(source), reason))
        logger.error("no output for %s: %s", source, reason)

    def add_finalizer(self, finalize: Callable[[], None]) -> None:
        """Run ``finalize`` before the report is written (e.g. a writer flags unfinished series)."""
        self._finalizers.append(finalize)

    def __len__(self) -> int:
        return len(self.failures)

    def write(self) -> Path:
        """Write ``failures.csv`` atomically (a header only when nothing failed); rank 0 only under torchrun."""
        if idist.get_rank() != 0:
            return self.path
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["input", "reason"])
        writer.writerows(self.failures)
        text = buffer.getvalue()
        return atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def finish(self) -> Path:
        """Run the finalizers, merge every rank's failures (under torchrun), write the report, return its path.

        A collective under torchrun: every rank calls it once, at the evaluator's epoch end. Rows
        that several ranks recorded (failures found while listing, which every rank does) count once.
        """
        for finalize in self._finalizers:
            finalize()
        self._finalizers.clear()
        self.failures = list(dict.fromkeys(row for rows in idist.all_gather(self.failures) for row in rows))
        self._finished = True
        return self.write()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.total:  # inputs not listed through inference_items (e.g. a datalist evaluation)
            dataset = getattr(getattr(engine.state, "dataloader", None), "dataset", None)
            self.total = len(dataset) if dataset is not None else 0
        self.finish()
        engine.state.metrics[self.metric_name] = len(self.failures)
        if self.failures:
            logger.error("%d of %d inputs got no output; see %s", len(self.failures), self.total, self.path)

    def raise_if_failed(self) -> None:
        """Raise :class:`BatchFailedError` when any input failed (the bundle's last ``run`` step).

        Raises:
            BatchFailedError: with the count, the report path and the first reasons.
        """
        if not self._finished:
            self.finish()
        if not self.failures:
            return
        shown = "; ".join(f"{Path(s).name}: {r}" for s, r in self.failures[:3])
        more = f" (and {len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
        raise BatchFailedError(
            f"{len(self.failures)} of {self.total} inputs got no output; see {self.path}. {shown}{more}"
        )
