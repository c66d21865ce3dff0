"""Long jobs (generators of progress records) in napari's ``thread_worker``, with every
error reaching the panel.

superqt's ``GeneratorWorker`` takes a ``RuntimeError`` raised by the generator for a
sign that the worker object was deleted: it warns ("RuntimeError in aborted thread")
and returns without emitting ``errored`` or ``finished``, so a panel waiting for them
hangs. torch raises ``RuntimeError`` for most failures (shapes, devices, CUDA out of
memory), so :func:`generator_worker` re-raises one as :class:`JobFailed` (the original
is its ``__cause__``), which the worker reports as any other error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["JobFailed", "generator_worker", "reporting_runtime_errors"]


class JobFailed(Exception):
    """A long job's ``RuntimeError``, re-raised so that the worker reports it."""


def reporting_runtime_errors(job: Callable[..., Iterator]) -> Callable[..., Iterator]:
    """``job`` (a generator function) with its ``RuntimeError`` re-raised as
    :class:`JobFailed` carrying the same message; records, values sent in and the
    return value pass through unchanged."""

    @functools.wraps(job)
    def wrapped(*args: Any, **kwargs: Any) -> Iterator:
        try:
            return (yield from job(*args, **kwargs))
        except RuntimeError as exc:
            raise JobFailed(str(exc) or type(exc).__name__) from exc

    return wrapped


def generator_worker(job: Callable[..., Iterator], *args: Any, **options: Any):
    """An unstarted ``thread_worker`` running ``job(*args)``, whose errors (a
    ``RuntimeError`` included) reach ``errored`` and then ``finished``; ``options``
    go to ``thread_worker`` (e.g. ``ignore_errors``)."""
    from napari.qt.threading import thread_worker

    run = reporting_runtime_errors(job)
    return thread_worker(run, start_thread=False, **options)(*args)
