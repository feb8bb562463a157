"""Run per-frame work on one background thread, on the latest frame only.

The executor thread must never block on inference (it also serves parameters, timers and
shutdown), and a camera must never build up a queue of stale frames. So a frame is handed to
the worker only while it is idle; a frame that arrives while another is in flight is refused,
and the caller counts it as dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestFrameWorker(Generic[T]):
    """One worker thread that processes at most one item at a time and queues nothing."""

    def __init__(
        self,
        process: Callable[[T], None],
        name: str = "posenet-inference",
        on_error: Callable[[T, Exception], None] | None = None,
    ) -> None:
        """``process`` runs on the worker thread; an exception it raises goes to ``on_error``
        (default: logged with the ``logging`` module) and the worker carries on."""
        self._process = process
        self._on_error = on_error or _log_error
        self._cond = threading.Condition()
        self._item: T | None = None
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Hand ``item`` to the worker; returns False (and keeps nothing) if it is busy."""
        with self._cond:
            if self._busy or self._stopping:
                return False
            self._item = item
            self._busy = True
            self._cond.notify()
            return True

    @property
    def busy(self) -> bool:
        """True while an item is waiting or being processed."""
        with self._cond:
            return self._busy

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the item in flight, if any, and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._item is None and not self._stopping:
                    self._cond.wait()
                if self._item is None:
                    return
                item, self._item = self._item, None
            try:
                self._process(item)
            except Exception as e:  # noqa: BLE001 - one bad frame must not end the thread
                self._on_error(item, e)
            finally:
                with self._cond:
                    self._busy = False


def _log_error(item: object, error: Exception) -> None:
    logging.getLogger(__name__).error("frame processing failed: %r", error, exc_info=error)
