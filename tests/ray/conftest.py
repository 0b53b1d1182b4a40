"""One local Ray instance (2 CPUs, like this repository's CI machine) for the Ray executor's tests, started
once for the folder and shut down after it; the toy study factory from tests/studies."""

from __future__ import annotations

import warnings

import pytest
from tests.studies.conftest import make_study  # noqa: F401  (a fixture, re-exported for these tests)


@pytest.fixture(scope="package")
def ray_cluster():
    import ray

    with warnings.catch_warnings():  # a FutureWarning about GPU env vars in future Ray versions
        warnings.simplefilter("ignore", FutureWarning)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
