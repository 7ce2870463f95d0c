"""Fixtures shared by test files in several folders. Plain helpers (model builders, paths) are in ``builders.py``."""

from __future__ import annotations

import pytest
import ray

from longshort.data.verify import Verifier, VerifyConfig


@pytest.fixture(scope="module")
def ray_local(request):
    """A real local Ray instance for one test module (4 logical CPUs: room for both roles' actors on 2 cores).

    The module is pickled by value, so actors can run helper functions defined in the test file.
    """
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(request.module)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def verifier():
    """The project's answer checker with two math-verify workers."""
    with Verifier(VerifyConfig(workers=2)) as v:
        yield v
