import ctypes
import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim  # glibc: give freed heap memory back
except (OSError, AttributeError):
    _malloc_trim = None


# the files that take longest (worker-seconds in a full run: 1060, 450, 440, 360, 290, 200, 190, 180, 170),
# handed out first by `make test` (xdist's `--dist loadfile --no-loadscope-reorder` follows this
# order), so that the two test processes end together instead of one finishing a long file alone
LONGEST_FIRST = ("test_readme.py", "test_export.py", "test_notebooks.py", "test_bad_inputs.py", "test_training.py",
                 "test_segmentation.py", "test_detection.py", "test_mixed_precision.py", "test_demo.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


def pytest_collection_finish(session):
    """The test modules' imports (TensorFlow, PyTorch, transformers) are never garbage: frozen, the
    garbage collector no longer walks them."""
    gc.collect()
    gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After each test the models it built are collected (they sit in reference cycles) and freed
    memory goes back to the system: without this each test process grew to 8-9 GB over a run,
    and the two of them beside a test's subprocess outgrew CI's 24 GB (a process was killed).

    What a test leaves alive is then frozen, so that each collection walks only what one test
    made (milliseconds; walking everything took 0.4-0.9 s per test); at a file's end, after its
    module fixtures are gone, everything is collected once.
    """
    yield  # the test's fixtures (its Keras session included), at a file's end the file's, are torn down
    if nextitem is None or nextitem.path != item.path:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    if _malloc_trim is not None:
        _malloc_trim(0)


def _fresh_state() -> None:
    tf_keras.mixed_precision.set_global_policy("float32")
    tf_keras.backend.clear_session()
    tf.summary.experimental.set_step(None)


@pytest.fixture(autouse=True)
def _fresh_state_per_test():
    """Every test starts and ends under the float32 policy with a fresh Keras session (cleared at
    the end too, so that Keras no longer holds the test's models when they are collected) and
    without a default tf.summary step (a training run leaves its step variable there)."""
    _fresh_state()
    yield
    _fresh_state()
