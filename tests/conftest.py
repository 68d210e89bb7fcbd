import ctypes
import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tf_keras  # noqa: E402

try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim  # glibc: give freed heap memory back
except (OSError, AttributeError):
    _malloc_trim = None


def pytest_collection_finish(session):
    """The test modules' imports (TensorFlow, PyTorch, transformers) are never garbage: freezing
    them makes each test's collection below take milliseconds instead of 0.3 s."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts and ends under the float32 policy with a fresh Keras session.

    After each test the models it built are collected (they sit in reference cycles) and freed
    memory goes back to the system: without this each test process grew to 8-9 GB over a run,
    and the two of them beside a test's subprocess outgrew CI's 24 GB (a process was killed).
    """
    tf_keras.mixed_precision.set_global_policy("float32")
    tf_keras.backend.clear_session()
    yield
    tf_keras.mixed_precision.set_global_policy("float32")
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
