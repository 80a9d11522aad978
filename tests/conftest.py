import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torchvision 0.29.1 segfaults when it is imported *after* TensorFlow 2.21 (the reverse order
# works); the parity tests import it, so load it first when it is installed.
try:
    import torchvision  # noqa: F401
except ImportError:
    pass

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _float32_policy_and_fresh_names():
    """Every test starts and ends with the float32 policy and a fresh Keras name scope."""
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
    yield
    keras.config.set_dtype_policy("float32")
