"""The suite's own set-up: `make test` runs pytest-xdist with --dist loadgroup, so the tests of one xdist_group
run on one worker (the joblib tests there share one pair of joblib worker processes)."""

import pytest


@pytest.mark.xdist_group("loky")
def test_an_xdist_group_stays_on_one_worker(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under pytest-xdist --dist loadgroup (make test)")
    # pytest-xdist groups by this suffix; a pytest that ignores it (9.2 with xdist 3.8) scatters the group.
    assert request.node.nodeid.endswith("@loky"), request.node.nodeid
