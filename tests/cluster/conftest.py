"""The `slurm` fixture: one real SLURM for the whole session (see tests/cluster/slurm.py)."""

import pytest

from tests.cluster import slurm as slurm_module


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    cluster = slurm_module.start(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
