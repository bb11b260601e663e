"""The commands' progress counter on stderr, in its own module so that every command can use it without
importing another command's module."""

from __future__ import annotations

import sys
import time


class Progress:
    """A counter on stderr (only when it is a terminal), refreshed at most 4 times a second."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.n = 0
        self.start = self.last = time.perf_counter()

    def tick(self) -> None:
        self.n += 1
        now = time.perf_counter()
        if self.enabled and now - self.last > 0.25:
            self.last = now
            print(f"\r{self.n} inputs, {self.n / (now - self.start):.0f}/s", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.n:
            print(f"\r{self.n} inputs in {time.perf_counter() - self.start:.1f}s", file=sys.stderr)
