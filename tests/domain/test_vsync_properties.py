"""The XOR algebra VSync relies on (docs/design.md §1, §4 invariant I1), property-tested."""

import random

from hypothesis import given
from hypothesis import strategies as st

from cidsync.cid import ZERO_VSYNC, vsync, vsync_add, vsync_remove, vsync_replace

cids = st.integers(min_value=0, max_value=2**256 - 1).map(lambda n: format(n, "064x"))
cid_sets = st.sets(cids, max_size=40).map(sorted)


@given(cid_sets, st.randoms())
def test_order_does_not_matter(values: list[str], rnd: random.Random) -> None:
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert vsync(shuffled) == vsync(values)


@given(cid_sets, cids)
def test_add_then_remove_is_identity(values: list[str], extra: str) -> None:
    start = vsync(values)
    assert vsync_remove(vsync_add(start, extra), extra) == start


@given(cid_sets)
def test_incremental_equals_batch(values: list[str]) -> None:
    running = ZERO_VSYNC
    for value in values:
        running = vsync_add(running, value)
    assert running == vsync(values)


@given(cid_sets, cid_sets)
def test_vsync_of_disjoint_union_is_xor_of_parts(a: list[str], b: list[str]) -> None:
    only_b = sorted(set(b) - set(a))
    combined = vsync(a)
    for value in only_b:
        combined = vsync_add(combined, value)
    assert combined == vsync(sorted(set(a) | set(only_b)))


@given(cid_sets.filter(bool), cids)
def test_replace_is_remove_then_add(values: list[str], new: str) -> None:
    old = values[0]
    assert vsync_replace(vsync(values), old, new) == vsync_add(vsync_remove(vsync(values), old), new)


@given(cid_sets)
def test_always_64_lowercase_hex(values: list[str]) -> None:
    result = vsync(values)
    assert len(result) == 64
    assert result == result.lower()
    int(result, 16)
