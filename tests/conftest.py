"""Session-wide guards for the fastcnn test suite."""

import os

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


@pytest.fixture
def small_ops_parallel(monkeypatch):
    """Every kernel and conv2d chunk on the whole team, however small its input
    (below ``_backend.PARALLEL_BYTES`` / ``PARALLEL_MACS`` they run on one thread)."""
    monkeypatch.setattr(_backend, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(_backend, "PARALLEL_MACS", 0)
