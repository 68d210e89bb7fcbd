import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tf_keras  # noqa: E402


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts and ends under the float32 policy with a fresh Keras session."""
    tf_keras.mixed_precision.set_global_policy("float32")
    tf_keras.backend.clear_session()
    yield
    tf_keras.mixed_precision.set_global_policy("float32")
