"""Length-sorted batches under a token budget: little padding, bounded memory, results back in input order."""

from __future__ import annotations

from typing import Iterator, Sequence


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> Iterator[list[int]]:
    """Yield lists of indices into ``lengths``, shortest inputs first.

    A batch is padded to its longest member, so its cost is ``rows x longest``; that product stays within
    ``max_batch_tokens`` (a single over-long input still forms a batch of its own).

    >>> list(plan_batches([5, 1, 3, 9], batch_size=2, max_batch_tokens=100))
    [[1, 2], [0, 3]]
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batch: list[int] = []
    for i in order:
        # Sorted ascending, so the newest member is the longest one.
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * lengths[i] > max_batch_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
