"""TensorFlow Datasets as a source: prepared data read offline, a download only when its host
answers (TFDS on its own retries each download for minutes)."""

from __future__ import annotations

import socket
import threading

import numpy as np

from training.data.archives import archive_help
from training.data.errors import DatasetError
from training.data.table import DatasetInfo

# Seconds to wait for a TCP connection before declaring the machine offline.
NETWORK_TIMEOUT_S = 3.0


def network_available(host: str, port: int = 443, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """True if a TCP connection to host:port opens within `timeout` seconds (DNS included)."""
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def _offline_message(info: DatasetInfo, data_dir: str | None, why: str) -> str:
    return (
        f"Cannot get dataset {info.name!r} from TFDS: {why}.\n"
        "To train offline, either:\n"
        f"  - {archive_help(info.name, data_dir)} (pass --data-dir to use another folder), or\n"
        f"  - copy a TFDS-prepared '{info.tfds_name}' directory (from `tfds build "
        f"{info.tfds_name}` on a connected machine) into --data-dir, or\n"
        "  - use the bundled real data set: --dataset digits (scikit-learn's handwritten digits),"
        " or --dataset synthetic for smoke tests."
    )


def read_tfds(info: DatasetInfo, split: str, data_dir: str | None):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # importlib_resources missing is the usual cause on 4.9.10
        raise DatasetError(
            f"tensorflow_datasets cannot be imported ({e}); pip install -r requirements.txt"
        ) from e
    try:
        ds = tfds.load(info.tfds_name, split=split, data_dir=data_dir, as_supervised=True,
                       download=False)
    except AssertionError:  # tfds: "could not find data in ..." (not prepared yet)
        if not network_available(info.download_host):
            raise DatasetError(_offline_message(
                info, data_dir, f"it is not prepared in {data_dir or '~/tensorflow_datasets'} "
                f"and {info.download_host} cannot be reached (no network?)")) from None
        ds = tfds.load(info.tfds_name, split=split, data_dir=data_dir, as_supervised=True,
                       download=True)
    images, labels = [], []
    for x, y in tfds.as_numpy(ds.batch(10000)):
        images.append(np.asarray(x, dtype=np.uint8))
        labels.append(np.asarray(y))
    images = np.concatenate(images)
    labels = np.concatenate(labels).astype(np.int32)
    if images.shape[1:] != info.image_size:
        raise DatasetError(f"TFDS {info.tfds_name!r} gave images of shape {images.shape[1:]}, "
                           f"expected {info.image_size}")
    return images, labels
