"""Download, verify and cache published checkpoints, and cache their Keras conversions.

Nothing here knows a model: whoever asks for a checkpoint says how to build the model to convert
it into (`cached_checkpoint(ckpt, reference)`).

Files go to `$CONVNEXT_TF_HOME` (default `~/.cache/convnext_tf`): the original under
`downloads/`, the converted Keras weights under `converted/`. Both are written to a temporary
file, verified there (size, sha256 when published, a structural read), and renamed only then, so
an interrupted or bad download leaves nothing under the final name. A cache file found corrupt is
removed and fetched or converted again once; a read-only cache converts in memory.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import warnings
from typing import Callable

import h5py
import tf_keras

from .catalogue import Checkpoint, Source
from .files import atomic_path, describe_content, remove_stale_temporaries
from .weights import CheckpointMismatchError, CheckpointReadError, load_weights, read_checkpoint, save_weights

HOME_ENV = "CONVNEXT_TF_HOME"
_CHUNK = 1 << 20


class DownloadError(OSError):
    """A checkpoint could not be downloaded or failed verification."""


def cache_dir() -> str:
    return os.environ.get(HOME_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "convnext_tf")


def _writable_folder(name: str) -> str:
    """The cache's folder `name`, created if needed; an error naming CONVNEXT_TF_HOME if it cannot be written."""
    folder = os.path.join(cache_dir(), name)
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise DownloadError(
            f"Cannot write the cache folder {folder}: {e.strerror or e}. Set {HOME_ENV} to a writable folder."
        ) from e
    remove_stale_temporaries(folder)
    return folder


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, tmp: str, progress: bool) -> str | None:
    """Write `url` to `tmp`; returns the content type. Raises DownloadError on a short read."""
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        content_type = response.headers.get("Content-Type")
        bar = tf_keras.utils.Progbar(total, unit_name="B") if progress else None
        received = 0
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            received += len(chunk)
            if bar:
                bar.update(received)
    if total is not None and received != total:
        raise DownloadError(f"The connection closed after {received} of {total} bytes.")
    return content_type


def download(ckpt: Checkpoint, progress: bool = True) -> str:
    """The local path of `ckpt`'s file, downloading and verifying it first if it is not cached.

    Its sources are tried in order; a download error moves on to the next, and the message says
    which one was used.
    """
    folder = os.path.join(cache_dir(), "downloads")
    for source in ckpt.sources:
        if os.path.exists(path := os.path.join(folder, ckpt.filename(source))):
            return path
    _writable_folder("downloads")
    failures = []
    for source in ckpt.sources:
        path = os.path.join(folder, ckpt.filename(source))
        try:
            _download(source, path, progress)
        except DownloadError as e:
            failures.append(f"- {source.url}: {e}")
            if progress and source is not ckpt.sources[-1]:
                print(f"convnext-tf: {source.url} failed ({e}); trying the next source")
            continue
        if progress:
            print(f"convnext-tf: downloaded {source.url} -> {path}")
        return path
    files = " or ".join(f"weights='/path/to/{os.path.basename(s.path)}'" for s in ckpt.sources)
    raise DownloadError(
        f"Could not download {ckpt.model} '{ckpt.tag}' ({ckpt.resolution}) from any of its sources:\n"
        + "\n".join(failures)
        + f"\nWithout network access, download the file elsewhere and pass it as a local file ({files}), "
        f"or copy it to {os.path.join(folder, ckpt.filename(ckpt.sources[0]))}."
    )


def _download(source: Source, path: str, progress: bool) -> None:
    """Fetch `source` to `path` through a temporary file, verified before the rename."""
    try:
        with atomic_path(path, source.ext) as tmp:
            content_type = _fetch(source.url, tmp, progress)
            if source.sha256 and sha256_of(tmp) != source.sha256:
                raise DownloadError(f"The file's sha256 differs from the published {source.sha256}; it was deleted.")
            try:
                read_checkpoint(tmp)  # a web page or a broken file is never cached
            except CheckpointReadError as e:
                raise DownloadError(
                    f"What it sent is not a checkpoint ({describe_content(tmp, content_type)}); it was deleted."
                ) from e
    except DownloadError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise DownloadError(f"{type(e).__name__}: {e}") from e


def converted_path(ckpt: Checkpoint) -> str:
    return os.path.join(cache_dir(), "converted", f"{ckpt.model}_{ckpt.tag}_{ckpt.resolution}.weights.h5")


def _intact_h5(path: str) -> bool:
    """Whether a converted file opens as Keras HDF5 weights (a truncated or overwritten one does not)."""
    try:
        with h5py.File(path, "r") as f:
            return "layer_names" in f.attrs and all(f[name].attrs.get("weight_names") is not None for name in f.attrs["layer_names"])
    except (OSError, KeyError, ValueError):
        return False


def _discard(path: str, what: str) -> None:
    warnings.warn(f"convnext-tf: the cache file {path} was corrupt ({what}) and was removed; it is made again.")
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def cached_checkpoint(ckpt: Checkpoint, reference: Callable[[Checkpoint], tf_keras.Model], progress: bool = True) -> str:
    """Path of the converted Keras weights of the published checkpoint `ckpt`.

    Downloads, verifies and converts on first use, into the model `reference(ckpt)` builds (the
    module that owns the model knows how to build it); afterwards the cached conversion is used
    and nothing is downloaded or converted. Where the cache cannot be written (read-only), the
    downloaded file's path is returned and loading converts it in memory.
    """
    path = converted_path(ckpt)
    if os.path.exists(path):
        if _intact_h5(path):
            return path
        _discard(path, "not a readable Keras weights file")
    source = download(ckpt, progress)
    model = reference(ckpt)
    try:
        load_weights(model, source)  # strict: a file that does not fit is reported, not cached
    except CheckpointReadError as e:  # damaged in the cache since it was verified
        _discard(source, str(e))
        source = download(ckpt, progress)
        load_weights(model, source)
    except CheckpointMismatchError:
        os.remove(source)  # a foreign download would fail the same way next time
        raise
    try:
        _writable_folder("converted")
        save_weights(model, path)
    except OSError as e:
        warnings.warn(f"convnext-tf: cannot cache the converted weights ({e}); converting {source} on each use.")
        return source
    if progress:
        print(f"convnext-tf: converted {source} -> {path}")
    return path
