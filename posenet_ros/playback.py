"""Dataset playback without ROS: frames read a few ahead on a thread, and the loop timing.

The dataset itself is read by :func:`posenet_core.datasets.read_dataset` (Cambridge or 7-Scenes,
with ``poses_{split}.csv`` capture times and ``intrinsics.json``) and its images by
:func:`posenet_core.images.read_rgb`. :class:`FramePrefetcher` reads the images a few frames ahead
on a background thread, so a large dataset is never loaded whole and one slow image does not
stall the publishing rate.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from posenet_core.datasets import PoseRecord
from posenet_core.errors import DatasetError, PoseNetError

__all__ = ["FramePrefetcher", "PlaybackItem", "loop_period_s"]


def loop_period_s(frames: Sequence[PoseRecord]) -> float:
    """Offset added to dataset timestamps per loop, so stamps keep increasing when playback
    loops: the time span of the frames plus their mean interval (1 s for a single frame)."""
    stamps = [f.timestamp_s for f in frames]
    if not stamps or any(s is None for s in stamps):
        raise DatasetError("loop_period_s needs frames that all have timestamps")
    if len(stamps) == 1:
        return 1.0
    span = stamps[-1] - stamps[0]
    return span + span / (len(stamps) - 1)


@dataclass(frozen=True)
class PlaybackItem:
    """One frame as the prefetch thread prepared it.

    ``count`` numbers the frames in playback order from 0 (over every loop), ``loop`` is the
    pass over the dataset (0 first) and ``index`` the frame's index in the dataset. ``payload``
    is what the load function returned, or None with ``error`` saying why it failed.
    """

    count: int
    loop: int
    index: int
    frame: PoseRecord
    payload: Any
    error: str = ""


class FramePrefetcher:
    """Loads the next frames on a background thread, a few ahead of playback.

    Datasets can be larger than memory, so images are read just before they are needed;
    reading ahead keeps a steady publishing rate when one image decodes slowly. ``load`` runs on
    the thread with a :class:`PoseRecord` and returns the payload (e.g. message fields); a
    :class:`PoseNetError` it raises becomes the item's ``error`` and playback carries on.
    """

    def __init__(
        self,
        frames: Sequence[PoseRecord],
        load: Callable[[PoseRecord], Any],
        *,
        loop: bool = False,
        depth: int = 4,
    ) -> None:
        if not frames:
            raise DatasetError("nothing to play: no frames")
        if depth < 1:
            raise DatasetError(f"prefetch depth {depth} must be >= 1")
        self._frames = list(frames)
        self._load = load
        self._loop = loop
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dataset-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: PlaybackItem | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        count = 0
        for loop in itertools.count():
            for index, frame in enumerate(self._frames):
                if self._stop.is_set():
                    return
                try:
                    item = PlaybackItem(count, loop, index, frame, self._load(frame))
                except PoseNetError as exc:
                    item = PlaybackItem(count, loop, index, frame, None, str(exc))
                except Exception as exc:  # noqa: BLE001 - a bug must not end playback silently
                    item = PlaybackItem(
                        count, loop, index, frame, None, f"unexpected {type(exc).__name__}: {exc}"
                    )
                if not self._put(item):
                    return
                count += 1
            if not self._loop:
                self._put(None)
                return

    def next(self, timeout_s: float = 0.0) -> PlaybackItem | None:
        """The next item; None at the end of a non-looping playback.

        Raises ``queue.Empty`` when the next frame is not ready within ``timeout_s``.
        """
        if timeout_s <= 0.0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=timeout_s)

    def stop(self) -> None:
        """Stop the thread (it ends after the frame it is loading)."""
        self._stop.set()
        self._thread.join(timeout=5.0)
