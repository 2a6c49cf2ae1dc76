"""The suite's own scheduling: the longest tests head the shares pytest-xdist's worksteal gives its workers."""

from types import SimpleNamespace
from typing import Any

from tests.conftest import LONGEST_GROUPS, longest_first


def fake(nodeid: str) -> Any:
    return SimpleNamespace(nodeid=nodeid)


def test_each_longest_group_heads_a_share_and_nothing_is_lost() -> None:
    items = [fake(f"tests/unit/test_{i}.py::test") for i in range(60)]
    longest = [fake(f"tests/{prefix}") for prefix in LONGEST_GROUPS]
    longest.append(fake("tests/e2e/test_faults.py::test_another"))  # a module group keeps its tests together
    mixed = items[:10] + longest[::-1] + items[10:]
    ordered = longest_first(mixed, workers=6)
    assert sorted(i.nodeid for i in ordered) == sorted(i.nodeid for i in mixed)
    # worksteal's shares of 67 items over 6 workers start at 0, 11, 22, 33, 44, 55
    heads = [ordered[start].nodeid.removeprefix("tests/") for start in (0, 11, 22, 33, 44, 55)]
    assert all(head.startswith(prefix) for head, prefix in zip(heads, LONGEST_GROUPS, strict=True)), heads
    faults = [i for i, item in enumerate(ordered) if item.nodeid.startswith("tests/e2e/test_faults.py")]
    assert faults == [33, 34]


def test_without_workers_or_long_tests_the_order_is_kept() -> None:
    items = [fake(f"tests/unit/test_{i}.py::test") for i in range(10)]
    assert longest_first(items, workers=6) == items
