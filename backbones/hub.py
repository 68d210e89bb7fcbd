"""Download, verify and cache published checkpoints, and cache their Keras conversions.

Files go to `$CONVNEXT_TF_HOME` (default `~/.cache/convnext_tf`): the original under
`downloads/`, the converted Keras weights under `converted/`. Both are written to a temporary
file and renamed only when complete (and, for downloads, verified), so an interrupted run leaves
nothing under the final name.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request

import tf_keras

from .catalogue import Checkpoint

HOME_ENV = "CONVNEXT_TF_HOME"
_CHUNK = 1 << 20


class DownloadError(OSError):
    """A checkpoint could not be downloaded or failed verification."""


def cache_dir() -> str:
    return os.environ.get(HOME_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "convnext_tf")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def temp_beside(path: str, suffix: str = "") -> str:
    """A new empty temporary file in `path`'s folder (created if needed), for an atomic rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".part{suffix}", dir=os.path.dirname(path))
    os.close(fd)
    return tmp


def download(ckpt: Checkpoint, progress: bool = True) -> str:
    """The local path of `ckpt`'s file, downloading and verifying it first if it is not cached."""
    path = os.path.join(cache_dir(), "downloads", ckpt.filename)
    if os.path.exists(path):
        return path
    hint = (
        f"Could not download {ckpt.url} to {path}. Without network access, download the file "
        f"elsewhere and pass it as a local file (weights='/path/to/{os.path.basename(ckpt.path)}'), "
        f"or copy it to {path}."
    )
    tmp = temp_beside(path)
    try:
        with urllib.request.urlopen(ckpt.url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = tf_keras.utils.Progbar(total, unit_name="B") if progress else None
            received = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
                if bar:
                    bar.update(received)
        if total is not None and received != total:
            raise DownloadError(f"{hint} The connection closed after {received} of {total} bytes.")
        if ckpt.sha256 and sha256_of(tmp) != ckpt.sha256:
            raise DownloadError(f"{hint} The file's sha256 differs from the published {ckpt.sha256}; it was deleted.")
        os.replace(tmp, path)
        return path
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        if isinstance(e, DownloadError):
            raise
        raise DownloadError(f"{hint} ({type(e).__name__}: {e})") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def converted_path(ckpt: Checkpoint) -> str:
    return os.path.join(cache_dir(), "converted", f"{ckpt.model}_{ckpt.tag}_{ckpt.resolution}.weights.h5")


def _reference_model(ckpt: Checkpoint) -> tf_keras.Model:
    """A model with every part the checkpoint has, to convert it into."""
    if ckpt.model.startswith("upernet_"):
        from convnext_tf.tasks.segmentation import build_segmentation_model

        return build_segmentation_model(ckpt.model[len("upernet_") :], ckpt.classes)
    from .model import build_convnext

    return build_convnext(
        ckpt.model, input_shape=(None, None, 3), include_top=ckpt.classes > 0, classes=max(ckpt.classes, 1)
    )


def pretrained(model: str, name: str, resolution: int | None = None, progress: bool = True) -> str:
    """Path of the converted Keras weights of checkpoint `name` of `model`.

    Downloads, verifies and converts on first use; afterwards the cached conversion is used and
    nothing is downloaded or converted.
    """
    from .catalogue import find
    from .weights import load_weights, save_weights

    ckpt = find(model, name, resolution)
    path = converted_path(ckpt)
    if os.path.exists(path):
        return path
    source = download(ckpt, progress)
    reference = _reference_model(ckpt)
    try:
        load_weights(reference, source)  # strict: a file that does not fit is reported, not cached
    except Exception:
        os.remove(source)  # a corrupt or foreign download would fail the same way next time
        raise
    save_weights(reference, path)
    if progress:
        print(f"convnext-tf: converted {ckpt.url} -> {path}")
    return path


def resolve(weights: str, model: str, resolution: int | None = None) -> str:
    """A local checkpoint path as it is, or the converted file of a catalogue name."""
    from .catalogue import is_name

    return pretrained(model, weights, resolution) if is_name(weights) else weights
