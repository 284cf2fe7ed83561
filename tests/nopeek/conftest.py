"""Fixtures shared by the tests of the core: the distributed cluster of test_distributed.py and
test_distributed_faults.py (one session fixture, so its processes start once)."""

from tests.nopeek._distributed_plan import children, cluster  # noqa: F401 (fixtures)
