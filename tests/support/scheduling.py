"""How the suite is spread over pytest-xdist's workers (``tests/conftest.py`` installs it).

With ``--dist loadfile`` a test file is one unit of work: its module fixtures are made once and
its tests never race each other. xdist would hand out the files with the most tests first, which
leaves the long files of few tests (a CNN trained end to end, the SLURM waits) for the end, where
one worker runs them while the others have nothing left. Here the units go out in the order of the
collection, which ``slow_files_first`` sorts: the files that hold a ``slow`` test first, then by
their number of tests. A file listed in ``SPLIT_BY_PARAM`` is one unit per parameter of its tests
(its module fixture is parametrized and made once per parameter anyway), so its rows are spread
over the workers. The files of one ``TOGETHER`` group are one unit (one worker pays their
common heavy import).
"""

from __future__ import annotations

from collections import Counter

import pytest
from xdist.scheduler import LoadFileScheduling

SPLIT_BY_PARAM = ("reliability/test_sandbox_threats.py",)
"""Files whose tests are grouped per parameter (a backend and mode of the threat table each)."""

TOGETHER = {
    "litellm": ("llm/test_llm.py", "llm/test_llm_direct.py", "engine/test_novelty.py"),
}
"""Files run one after the other on one worker, as one unit: those that import litellm in the
test process (~4 CPU-s for each worker that does; spread, two or three workers did)."""


class SlowFirstFileScheduling(LoadFileScheduling):
    """``loadfile`` in the collection's order, with ``SPLIT_BY_PARAM`` files split by parameter."""

    def __init__(self, config: pytest.Config, log: object = None) -> None:
        super().__init__(config, log)  # type: ignore[arg-type]
        config.option.loadscopereorder = False  # the collection's order is the cost order

    def _split_scope(self, nodeid: str) -> str:
        path, _, name = nodeid.partition("::")
        if path.endswith(SPLIT_BY_PARAM) and name.endswith("]") and "[" in name:
            return f"{path}::[{name[name.index('[') + 1 : -1]}]"
        for group, files in TOGETHER.items():
            if path.endswith(files):
                return f"together:{group}"
        return path


def slow_files_first(items: list[pytest.Item]) -> None:
    """Sort ``items`` (stably: a file's tests keep their order) so that the files with a slow
    test come first, then the files with more tests."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    counts = Counter(item.path for item in items)
    items.sort(key=lambda item: (item.path not in slow, -counts[item.path]))
