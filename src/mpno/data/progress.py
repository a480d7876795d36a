"""Progress of data generation: a bar on a terminal, and off one a line per chunk of samples (on stderr),
as ``mpno train`` prints a line per epoch, so that a log shows a long job moving."""

from __future__ import annotations

import math
import sys
import time

from tqdm.auto import tqdm

#: Off a terminal, a job reports about this many times (and once more when it is done).
LINES = 20


class Progress:
    """Counts ``total`` samples as they are done (:meth:`update`); a context manager.

    ``show``: ``None`` (default) for a bar on a terminal and lines off one, ``True``
    for a bar, ``False`` for nothing. A line is printed each time another
    ``total / LINES`` samples (rounded up) are done, and at the end.
    """

    def __init__(self, total: int, desc: str, show: bool | None = None):
        terminal = sys.stderr.isatty()
        self.total, self.desc, self.done = total, desc, 0
        self.lines = show is None and not terminal
        self.every = max(1, math.ceil(total / LINES))
        self.next = self.every
        self.start = time.perf_counter()
        self.bar = tqdm(total=total, unit="sample", desc=desc, disable=not terminal if show is None else not show)

    def update(self, count: int) -> None:
        self.done += count
        self.bar.update(count)
        if self.lines and (self.done >= self.next or self.done == self.total):
            print(f"{self.desc}: {self.done}/{self.total} samples, {time.perf_counter() - self.start:.1f} s",
                  file=sys.stderr, flush=True)
            self.next = (self.done // self.every + 1) * self.every

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
