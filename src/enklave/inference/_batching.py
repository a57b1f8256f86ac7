"""Dynamic batching of concurrent calls to one model (private to :mod:`enklave.inference.runner`).

Callers on several threads submit jobs; the first caller that finds no batch being gathered becomes the leader.
While another batch of the same model is running, the leader waits, up to the delay, or until the queue holds
``max_batch`` rows that can run together; then it takes its own job and the compatible jobs queued before it
(first in, first out), hands leadership to the next waiting caller, and runs the batch outside the lock, so that
one batch runs while the next one gathers. Jobs are compatible when they ask for the same outputs and their inputs
agree on every dimension but the first.

When no batch is running, the leader does not wait: the model is free, so waiting would only add the delay to
the request, and under load the model is busy and batches form while it runs ("batch while busy"). The delay
caps how long a request waits for a busy model before it runs beside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Batcher", "Job"]

Array = npt.NDArray[Any]
Execute = Callable[[dict[str, Array], list[str]], list[Array]]
"""Runs the session once: feeds and output names in, one array per output name out; raises BoundaryError."""
Record = Callable[[int, int], None]
"""Counts one session run, as it starts (failed runs count too): the number of jobs merged into it and their
rows."""


@dataclass(slots=True, eq=False)
class Job:
    """One caller's validated request: its feeds, its outputs, and (once done) its result or error."""

    key: Hashable
    feeds: dict[str, Array]
    outputs: list[str]
    rows: int
    taken: bool = False
    done: bool = False
    result: list[Array] = field(default_factory=list)
    error: BaseException | None = None


class Batcher:
    """Merges concurrent jobs along axis 0 into one session run; see the module docstring for the schedule."""

    def __init__(self, execute: Execute, record: Record, *, max_batch: int, max_delay_s: float) -> None:
        self._execute = execute
        self._record = record
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._cond = threading.Condition()
        self._queue: list[Job] = []
        self._gathering = False
        self._running = 0

    def submit(self, job: Job) -> list[Array]:
        """Run ``job``, alone or merged with others; returns its outputs or raises its own error."""
        with self._cond:
            # Fast path: nothing queued, gathering or running, so there is nobody to merge with; run at once
            # (marked as running, so that jobs arriving meanwhile gather behind it as usual).
            idle = not self._queue and not self._gathering and not self._running
            if idle:
                self._running += 1
        if idle:
            try:
                self._run_alone(job)
            finally:
                with self._cond:
                    self._running -= 1
                    job.done = True
                    self._cond.notify_all()
            if job.error is not None:
                raise job.error
            return job.result
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()
            try:
                while not job.done:
                    if not job.taken and not self._gathering:
                        self._gathering = True
                        break
                    self._cond.wait()
            except BaseException:
                # Interrupted while waiting: the job must not run for nobody.
                if job in self._queue:
                    self._queue.remove(job)
                raise
        if not job.done:
            self._lead(job)
        if job.error is not None:
            raise job.error
        return job.result

    def _lead(self, job: Job) -> None:
        deadline = time.monotonic() + self._max_delay_s
        batch: list[Job] = []
        with self._cond:
            try:
                while self._running and self._ready_rows(job) < self._max_batch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = self._take(job)
                self._running += 1
            finally:
                if not batch and job in self._queue:
                    # Interrupted while gathering: nobody waits for this job any more.
                    self._queue.remove(job)
                # Hand over leadership before running, so that the next batch gathers while this one runs.
                self._gathering = False
                self._cond.notify_all()
        try:
            self._run(batch)
        finally:
            with self._cond:
                self._running -= 1
                for member in batch:
                    member.done = True
                self._cond.notify_all()

    def _ready_rows(self, job: Job) -> int:
        return sum(other.rows for other in self._queue if other.key == job.key)

    def _take(self, job: Job) -> list[Job]:
        batch = [job]
        rows = job.rows
        for other in self._queue:
            if other is not job and other.key == job.key and rows + other.rows <= self._max_batch:
                batch.append(other)
                rows += other.rows
        for member in batch:
            member.taken = True
            self._queue.remove(member)
        return batch

    def _run(self, batch: list[Job]) -> None:
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        total = sum(member.rows for member in batch)
        outputs = batch[0].outputs
        try:
            feeds = {name: np.concatenate([m.feeds[name] for m in batch], axis=0) for name in batch[0].feeds}
            self._record(len(batch), total)
            results = self._execute(feeds, outputs)
        except Exception:
            # One bad request must not fail the others (and a batch may be too large where a request alone is
            # not): run each alone, so that only the caller whose request fails sees the error.
            for member in batch:
                self._run_alone(member)
            return
        if any(result.ndim == 0 or result.shape[0] != total for result in results):
            # The model's outputs are not batch-major after all: the merged result cannot be split by rows.
            for member in batch:
                self._run_alone(member)
            return
        offset = 0
        for member in batch:
            member.result = [result[offset : offset + member.rows] for result in results]
            offset += member.rows

    def _run_alone(self, job: Job) -> None:
        try:
            self._record(1, job.rows)
            job.result = self._execute(job.feeds, job.outputs)
        except BaseException as exc:
            job.error = exc
