"""Segmentation data as `tf.data`: a folder of images and labels, augmentation, preprocessing.

The folder layout is the one people keep their own data in:

    DIR/images/*.jpg|jpeg|png      DIR/labels/*.png      (pairs matched by file stem)

Labels are single-channel class ids or palette PNGs (the palette index is the class, 255 ignored),
see `label_files`. Training batches follow the official ADE20K recipe: random rescaling by 0.5-2.0,
a random crop (padded with the ignore label where the image is smaller), a random horizontal flip;
labels are resized with nearest neighbour. Images are normalised with the ImageNet mean and std
(`preprocess_input`), as the models expect.
"""
from __future__ import annotations

import glob
import os
import struct
from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from convnext_tf.backbones import arguments
from convnext_tf.backbones.model import preprocess_input

from .label_files import read_label
from .segmentation import IGNORE_LABEL
from .visualize import read_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
Pairs = Sequence[tuple[str, str]]


def find_pairs(data_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(image, label) paths of `data_dir/images` and `data_dir/labels`, matched by stem, sorted.

    Raises a ValueError naming the stems that have an image but no label (or a label but no image).
    """
    data_dir = os.fspath(data_dir)
    folders = {k: os.path.join(data_dir, k) for k in ("images", "labels")}
    for kind, folder in folders.items():
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"No {kind} folder {folder!r}: expected {data_dir}/images/*.jpg|png and {data_dir}/labels/*.png."
            )
    images = {os.path.splitext(os.path.basename(p))[0]: p for p in sorted(glob.glob(os.path.join(folders["images"], "*")))
              if p.lower().endswith(IMAGE_EXTENSIONS)}
    labels = {os.path.splitext(os.path.basename(p))[0]: p for p in sorted(glob.glob(os.path.join(folders["labels"], "*.png")))}
    if not images:
        raise FileNotFoundError(f"No images (*.jpg, *.jpeg, *.png) in {folders['images']!r}.")
    for missing, have, where in ((images.keys() - labels.keys(), "an image", "labels"),
                                 (labels.keys() - images.keys(), "a label", "images")):
        if missing:
            names = sorted(missing)
            raise ValueError(
                f"{len(names)} file(s) have {have} but nothing of the same name in {folders[where]!r}: "
                f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}."
            )
    return [(images[stem], labels[stem]) for stem in sorted(images)]


def split_pairs(pairs: Pairs, val_split: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Shuffle `pairs` with `seed` and hold out `val_split` of them (at least one) for validation."""
    val_split = arguments.number("val_split", val_split, 0.0, 1.0)
    pairs = list(pairs)
    if len(pairs) < 2:
        raise ValueError(f"Need at least 2 image/label pairs to hold some out for validation; got {len(pairs)}.")
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = min(max(1, round(len(pairs) * val_split)), len(pairs) - 1)
    return [pairs[i] for i in order[n_val:]], [pairs[i] for i in order[:n_val]]


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of a JPEG or PNG file from its header, without decoding the pixels."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])[::-1]
    try:
        h, w, _ = tf.io.extract_jpeg_shape(data).numpy()
    except tf.errors.InvalidArgumentError:
        h, w = read_rgb(path).shape[:2]  # neither: decode it (raises a clear error if it is no image)
    return int(h), int(w)


def check_pairs(pairs: Pairs, ignore_label: int = IGNORE_LABEL) -> int:
    """Read every label and each image's size; raise a ValueError naming the first pair whose
    label is unreadable or of another size than its image. Returns the number of classes (the
    largest class id other than `ignore_label`, plus one)."""
    largest = 0
    progress = tf_keras.utils.Progbar(len(pairs), unit_name="pair")
    for image_path, label_path in pairs:
        label = read_label(label_path)
        h, w = image_size(image_path)
        if (h, w) != label.shape:
            raise ValueError(f"{image_path} is {w}x{h} but its label {label_path} is {label.shape[1]}x{label.shape[0]}.")
        ids = np.unique(label)
        largest = max(largest, int(ids[ids != ignore_label].max(initial=0)))
        progress.add(1)
    return largest + 1


def load_pair(image_path: str, label_path: str) -> tuple[np.ndarray, np.ndarray]:
    """An image (uint8 RGB) and its label map (uint8), checked to have the same size (`check_pairs`
    checks a whole folder up front: inside a `tf.data` pipeline this error surfaces as TensorFlow's)."""
    image, label = read_rgb(image_path), read_label(label_path)
    if image.shape[:2] != label.shape:
        raise ValueError(f"{image_path} is {image.shape[1]}x{image.shape[0]} but its label {label_path} is "
                         f"{label.shape[1]}x{label.shape[0]}.")
    return image, label


def from_pairs(pairs: Pairs) -> tf.data.Dataset:
    """(image uint8 (H, W, 3), label uint8 (H, W)) read from (image, label) paths."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("No image/label pairs given.")

    def load(image_path, label_path):
        return load_pair(image_path.decode(), label_path.decode())

    def read(image_path, label_path):
        image, label = tf.numpy_function(load, [image_path, label_path], (tf.uint8, tf.uint8))
        return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(label, [None, None])

    paths = tf.data.Dataset.from_tensor_slices(tuple(list(p) for p in zip(*pairs)))
    return paths.map(read, num_parallel_calls=tf.data.AUTOTUNE)


def augment(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, crop_size: tuple[int, int],
            scale_range: tuple[float, float] = (0.5, 2.0)) -> tuple[tf.Tensor, tf.Tensor]:
    """Random rescale, crop and flip of a preprocessed image and its labels (stateless, from `seed`)."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    size = tf.cast(tf.shape(label)[:2], tf.float32)
    scale = tf.random.stateless_uniform([], seeds[0], *scale_range)
    new = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
    image = tf.image.resize(image, new, "bilinear")
    label = tf.image.resize(label[..., None], new, "nearest")[..., 0]
    ch, cw = crop_size
    pad_h, pad_w = tf.maximum(ch - new[0], 0), tf.maximum(cw - new[1], 0)
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])  # 0 is the mean colour after normalisation
    label = tf.pad(label, [[0, pad_h], [0, pad_w]], constant_values=IGNORE_LABEL)
    both = tf.concat([image, tf.cast(label, tf.float32)[..., None]], axis=-1)
    both = tf.image.stateless_random_crop(both, [ch, cw, 4], seeds[1])
    both = tf.image.stateless_random_flip_left_right(both, seeds[2])
    return both[..., :3], tf.cast(both[..., 3], tf.uint8)


def pipeline(
    source: Pairs | tf.data.Dataset,
    training: bool,
    crop_size: int | tuple[int, int] = 512,
    batch_size: int = 8,
    seed: int = 0,
    scale_range: tuple[float, float] = (0.5, 2.0),
) -> tf.data.Dataset:
    """Batches of (preprocessed float32 images, uint8 labels) for `SegmentationModel.fit` / `evaluate`.

    `source` is a list of (image, label) paths (`find_pairs`) or a dataset of (uint8 image, label)
    pairs (`shapes.dataset`). Training: shuffled, repeated, augmented to `crop_size` crops in
    batches of `batch_size`. Evaluation: every image once, whole, one per batch (sizes differ).
    """
    ds = source if isinstance(source, tf.data.Dataset) else from_pairs(source)
    if isinstance(crop_size, (int, np.integer)):
        crop_size = (crop_size, crop_size)
    crop_size = tuple(arguments.integer("crop_size", c, lo=32) for c in crop_size)
    batch_size = arguments.integer("batch_size", batch_size, lo=1)
    ds = ds.map(lambda image, label: (preprocess_input(tf.cast(image, tf.float32)), label))
    if not training:
        return ds.batch(1).prefetch(tf.data.AUTOTUNE)
    ds = ds.shuffle(256, seed=seed, reshuffle_each_iteration=True).repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds)).map(
        lambda pair, s: augment(pair[0], pair[1], s, crop_size, scale_range), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
