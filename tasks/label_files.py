"""Label maps as PNG files: single-channel class ids, or palette PNGs as PASCAL VOC ships them.

In a palette PNG the palette index of a pixel is its class (255: ignored) and the colours are only
for viewing. OpenCV expands palettes to colours when it reads, so the palette (the PNG's PLTE
chunk) is read here and the colours mapped back to their indices.
"""
from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np

from convnext_tf.backbones.files import atomic_path

from .visualize import voc_palette

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(data: bytes):
    """(type, payload) of each chunk of a PNG file's bytes."""
    pos = len(_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A label file as a uint8 (H, W) map of class ids: a single-channel PNG (the values are the
    classes) or a palette PNG (the palette indices are the classes)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise OSError(f"Cannot read the label file {path!r}: {e.strerror}.") from e
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"Label file {path!r} is not a PNG (labels must be single-channel or palette PNGs).")
    chunks = dict(_chunks(data)) if len(data) > 33 else {}
    if b"IHDR" not in chunks:
        raise ValueError(f"Label file {path!r} is a broken PNG (no header).")
    color_type = chunks[b"IHDR"][9]
    buffer = np.frombuffer(data, np.uint8)
    if color_type == 3:  # palette: map the decoded colours back to their palette indices
        palette = np.frombuffer(chunks.get(b"PLTE", b""), np.uint8).reshape(-1, 3).astype(np.int64)
        rgb = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if rgb is None or not len(palette):
            raise ValueError(f"Cannot decode the palette PNG {path!r}.")
        keys = palette @ [65536, 256, 1]
        pixels = rgb[..., ::-1].astype(np.int64) @ [65536, 256, 1]
        order = np.argsort(keys, kind="stable")  # a colour listed twice maps to its first index
        found = np.clip(np.searchsorted(keys[order], pixels), 0, len(keys) - 1)
        if not np.all(keys[order][found] == pixels):
            raise ValueError(f"Palette PNG {path!r} has pixels whose colour is not in its palette.")
        return order[found].astype(np.uint8)
    if color_type != 0:
        kind = {2: "RGB", 4: "grey + alpha", 6: "RGBA"}.get(color_type, f"colour type {color_type}")
        raise ValueError(
            f"Label file {path!r} is an {kind} PNG; labels must be single-channel class ids or a palette PNG "
            "(as PASCAL VOC ships them)."
        )
    label = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise ValueError(f"Cannot decode the label PNG {path!r}.")
    if label.max(initial=0) > 255:
        raise ValueError(f"Label file {path!r} has class ids up to {label.max()}; at most 255 are supported.")
    return label.astype(np.uint8)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_label(path: str | os.PathLike, label: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write a (H, W) map of class ids 0..255 as a palette PNG (VOC colours by default), atomically."""
    label = np.asarray(label)
    if label.ndim != 2 or label.size == 0:
        raise ValueError(f"label must be a non-empty (H, W) map of class ids; got shape {label.shape}.")
    if label.min() < 0 or label.max() > 255:
        raise ValueError(f"label values must lie in 0..255; got {label.min()}..{label.max()}.")
    palette = voc_palette() if palette is None else np.asarray(palette, np.uint8).reshape(-1, 3)
    h, w = label.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), label.astype(np.uint8)], axis=1)  # filter byte 0 per row
    png = _SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)) + _chunk(b"PLTE", palette.tobytes())
    png += _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _chunk(b"IEND", b"")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(png)
