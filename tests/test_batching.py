"""plan_batches: every input once, in sorted contiguous groups within the limits, at the least modelled cost.

Runtime-only (no torch). The optimality check enumerates every way to cut the sorted inputs, so the planner's
dynamic programme is compared with the true optimum, not with itself.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings, strategies as st

from onnxpipe._batching import plan_batches


def _cost(batches, lengths, overhead):
    return sum(len(b) * max(lengths[i] for i in b) + overhead for b in batches)


def _greedy(lengths, batch_size, budget):
    order, out, batch = sorted(range(len(lengths)), key=lengths.__getitem__), [], []
    for i in order:
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * lengths[i] > budget):
            out.append(batch)
            batch = []
        batch.append(i)
    return out + ([batch] if batch else [])


def _all_cuts(lengths, batch_size, budget):
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n = len(order)
    for mask in itertools.product([False, True], repeat=n - 1):
        batches, start = [], 0
        for k, cut in enumerate(mask, 1):
            if cut:
                batches.append(order[start:k])
                start = k
        batches.append(order[start:])
        if all(
            len(b) <= batch_size and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget) for b in batches
        ):
            yield batches


LENGTHS = st.lists(st.integers(1, 80), min_size=0, max_size=60)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(lengths=LENGTHS, batch_size=st.integers(1, 40), budget=st.integers(1, 1200), overhead=st.integers(0, 64))
def test_every_input_once_sorted_and_within_the_limits(lengths, batch_size, budget, overhead):
    batches = list(plan_batches(lengths, batch_size, budget, overhead))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)  # shortest first, groups contiguous in sorted order
    for b in batches:
        assert 1 <= len(b) <= batch_size
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget
    # never worse than filling each batch greedily up to the limits
    greedy = _greedy(lengths, batch_size, budget)
    assert _cost(batches, lengths, overhead) <= _cost(greedy, lengths, overhead)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=11),
    batch_size=st.integers(1, 12),
    budget=st.integers(1, 300),
    overhead=st.integers(0, 40),
)
def test_the_cuts_are_the_cheapest_of_all_possible_cuts(lengths, batch_size, budget, overhead):
    got = _cost(list(plan_batches(lengths, batch_size, budget, overhead)), lengths, overhead)
    assert got == min(_cost(c, lengths, overhead) for c in _all_cuts(lengths, batch_size, budget))


def test_a_request_splits_where_the_lengths_jump():
    # Greedy filling would pad all eight to 43 tokens (344 fit the budget); the cost model splits at the jump.
    mixed = [5, 40, 6, 41, 7, 42, 8, 43]
    assert [sorted(mixed[i] for i in b) for b in plan_batches(mixed, 32, 1024)] == [[5, 6, 7, 8], [40, 41, 42, 43]]
