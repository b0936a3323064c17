"""Session-wide guards for the fastcnn test suite."""

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastcnn
from fastcnn import _backend

# HYPOTHESIS_PROFILE picks one: "dev" (default), "ci" (derandomized, so a CI
# run is reproducible) or "long" (on demand: many more examples per test).
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, **_common)
settings.register_profile("ci", max_examples=60, derandomize=True, database=None, **_common)
settings.register_profile("long", max_examples=2000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_report_header(config):
    return (
        f"fastcnn {fastcnn.__version__} from {os.path.dirname(fastcnn.__file__)}: "
        f"backend={fastcnn.get_backend()}, threads={fastcnn.get_num_threads()}"
    )


def pytest_sessionstart(session):
    # A broken build must not pass by silently testing the NumPy twin against itself.
    asked_for_numpy = os.environ.get("FASTCNN_BACKEND", "").strip().lower() == "numpy"
    if fastcnn.get_backend() != "cython" and not asked_for_numpy:
        pytest.exit(
            "the compiled backend is not active (fastcnn imported from "
            f"{os.path.dirname(fastcnn.__file__)}); build it with `pip install .` or run "
            "the suite on purpose with FASTCNN_BACKEND=numpy",
            returncode=1,
        )


@pytest.fixture(params=("numpy", "cython") if _backend.compiled_available() else ("numpy",))
def backend(request):
    """The test once per kernel set (the NumPy one alone if the compiled one is missing)."""
    with fastcnn.use_backend(request.param):
        yield request.param


@pytest.fixture
def small_ops_parallel(monkeypatch):
    """Every kernel and conv2d chunk on the whole team, however small its input
    (below ``_backend.PARALLEL_BYTES`` / ``PARALLEL_MACS`` they run on one thread)."""
    monkeypatch.setattr(_backend, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(_backend, "PARALLEL_MACS", 0)


@pytest.fixture
def global_rng():
    """``np.random.seed``; NumPy's global generator is restored afterwards.

    The code the compat modules replace draws from the global generator, so
    comparing it with a drop-in means seeding that generator."""
    state = np.random.get_state()
    yield np.random.seed
    np.random.set_state(state)


@pytest.fixture
def load_copy(tmp_path):
    """``load_copy(project, name, edits=())``: :func:`originals.load_copy` into
    tmp_path; the copies leave ``sys.path`` and ``sys.modules`` afterwards."""
    import originals

    names = []

    def load(project, name, edits=()):
        names.append(name)
        return originals.load_copy(project, name, tmp_path, edits)

    yield load
    sys.path[:] = [entry for entry in sys.path if entry != str(tmp_path)]
    for module in [m for m in sys.modules if m.split(".")[0] in names]:
        del sys.modules[module]
