"""The generated dataset, label files, the folder reader and its augmentation, and the scores."""
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from convnext_tf.backbones import preprocess_input
from convnext_tf.tasks import MeanIoU, datasets, label_files, metrics, shapes
from convnext_tf.tasks.visualize import voc_palette

N_CLASSES = len(shapes.CLASSES)


def test_samples_are_deterministic_odd_sized_and_labelled_with_ignored_edges():
    first = list(shapes.samples(12, seed=5))
    again = list(shapes.samples(12, seed=5))
    other = next(shapes.samples(1, seed=6))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(first[0].image, other.image) or first[0].image.shape != other.image.shape
    sizes = {s.image.shape[:2] for s in first}
    assert len(sizes) > 6 and all(128 <= h <= 192 and 128 <= w <= 192 for h, w in sizes)
    assert any(h % 32 or w % 32 for h, w in sizes)
    for s in first:
        assert s.image.dtype == np.uint8 and s.label.shape == s.image.shape[:2]
        assert set(np.unique(s.label)) <= set(range(N_CLASSES)) | {255}
        # the label map from the masks: class inside each (non-overlapping) mask, 255 where a
        # 3x3 neighbourhood holds two classes
        expected = np.zeros(s.label.shape, np.int64)
        assert s.masks.sum(0).max(initial=0) <= 1
        for mask, c in zip(s.masks, s.classes):
            expected[mask > 0] = c
        padded = np.pad(expected, 1, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
        edge = windows.max((-1, -2)) != windows.min((-1, -2))
        expected[edge] = 255
        np.testing.assert_array_equal(s.label, expected)
        assert edge.any() == bool(len(s.classes))
        for (y1, x1, y2, x2), mask in zip(s.boxes, s.masks):  # boxes enclose their masks exactly
            ys, xs = np.nonzero(mask)
            assert (y1, x1, y2, x2) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def test_a_photo_background_keeps_its_size():
    photo = cv2.cvtColor(cv2.imread(shapes.photo_path()), cv2.COLOR_BGR2RGB)
    s = shapes.sample(0, seed=3, background=photo)
    assert s.image.shape == photo.shape
    outside = (s.masks.sum(0) == 0) if len(s.masks) else np.ones(photo.shape[:2], bool)
    np.testing.assert_array_equal(s.image[outside], photo[outside])


def test_palette_labels_round_trip_and_match_pillow(tmp_path):
    label = np.random.default_rng(0).integers(0, 6, (37, 53)).astype(np.uint8)
    label[0] = 255
    path = tmp_path / "l.png"
    label_files.write_label(path, label)
    with Image.open(path) as im:  # an independent PNG reader: a palette image with the VOC colours
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), label)
        assert im.getpalette()[:6 * 3] == voc_palette()[:6].ravel().tolist()
    np.testing.assert_array_equal(label_files.read_label(path), label)


def test_reads_palette_pngs_written_by_pillow_and_single_channel_pngs(tmp_path):
    label = np.random.default_rng(1).integers(0, 21, (40, 30)).astype(np.uint8)
    label[5:9] = 255
    im = Image.fromarray(label, mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    im.save(tmp_path / "voc.png")  # as PASCAL VOC's SegmentationClass files are stored
    np.testing.assert_array_equal(label_files.read_label(tmp_path / "voc.png"), label)
    cv2.imwrite(str(tmp_path / "gray.png"), label)
    np.testing.assert_array_equal(label_files.read_label(tmp_path / "gray.png"), label)


def test_label_file_errors_name_the_problem(tmp_path):
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="rgb.png' is an RGB PNG; labels must be single-channel"):
        label_files.read_label(tmp_path / "rgb.png")
    cv2.imwrite(str(tmp_path / "l.jpg"), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="is not a PNG"):
        label_files.read_label(tmp_path / "l.jpg")
    with pytest.raises(OSError, match="Cannot read the label file"):
        label_files.read_label(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="0..255"):
        label_files.write_label(tmp_path / "x.png", np.full((4, 4), 300))


def test_folder_layout_pairs_by_stem(tmp_path):
    folder = shapes.write_folder(tmp_path / "data", 5, seed=2)
    pairs = datasets.find_pairs(folder)
    assert [os.path.basename(i) for i, _ in pairs] == [f"{i:04d}.jpg" for i in range(5)]
    for (image_path, label_path), s in zip(pairs, shapes.samples(5, seed=2)):
        image, label = datasets.load_pair(image_path, label_path)
        np.testing.assert_array_equal(label, s.label)
        assert image.shape == s.image.shape and np.abs(image.astype(int) - s.image).mean() < 6  # JPEG
    assert datasets.check_pairs(pairs) == max(int(s.classes.max(initial=0)) for s in shapes.samples(5, seed=2)) + 1
    train, val = datasets.split_pairs(pairs, 0.2, seed=0)
    assert len(val) == 1 and sorted(train + val) == pairs
    os.remove(os.path.join(folder, "labels", "0003.png"))
    with pytest.raises(ValueError, match="have an image but nothing of the same name in .*labels'?: 0003"):
        datasets.find_pairs(folder)
    with pytest.raises(FileNotFoundError, match="No images folder"):
        datasets.find_pairs(tmp_path)
    cv2.imwrite(os.path.join(folder, "labels", "0003.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"0003.jpg is \d+x\d+ but its label .*0003.png is 10x10"):
        datasets.check_pairs(datasets.find_pairs(folder))
    for path, _ in pairs:  # sizes from the headers equal the decoded images'
        assert datasets.image_size(path) == cv2.imread(path).shape[:2]
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((7, 9, 3), np.uint8))
    assert datasets.image_size(str(tmp_path / "x.png")) == (7, 9)


def test_training_batches_are_augmented_crops_with_nearest_labels():
    source = shapes.dataset(6, seed=4)
    a = list(datasets.pipeline(source, True, crop_size=(96, 112), batch_size=3, seed=1).take(4).as_numpy_iterator())
    b = list(datasets.pipeline(source, True, crop_size=(96, 112), batch_size=3, seed=1).take(4).as_numpy_iterator())
    for (xa, ya), (xb, yb) in zip(a, b):  # deterministic by seed
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert xa.shape == (3, 96, 112, 3) and xa.dtype == np.float32 and ya.shape == (3, 96, 112)
        assert set(np.unique(ya)) <= set(range(N_CLASSES)) | {255}  # nearest neighbour: no new values


def test_augment_pads_with_the_ignore_label_and_keeps_pixels_at_scale_one():
    image = tf.random.uniform((40, 50, 3))
    label = tf.cast(tf.random.uniform((40, 50), 0, 5, tf.int32), tf.uint8)
    x, y = datasets.augment(image, label, tf.constant([1, 2], tf.int64), (64, 64), scale_range=(1.0, 1.0))
    x, y, image, label = x.numpy(), y.numpy(), image.numpy(), label.numpy()
    assert x.shape == (64, 64, 3) and y.shape == (64, 64)
    assert (y == 255).sum() == 64 * 64 - 40 * 50 and np.all(x[y == 255] == 0)  # padded: mean colour, ignored
    rows, cols = np.nonzero(y != 255)
    crop = y[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    flipped = not np.array_equal(crop, label)
    np.testing.assert_array_equal(crop, label[:, ::-1] if flipped else label)


def test_evaluation_batches_are_whole_preprocessed_images():
    samples = list(shapes.samples(3, seed=9))
    batches = list(datasets.pipeline(shapes.dataset(3, seed=9), False).as_numpy_iterator())
    for (x, y), s in zip(batches, samples):
        np.testing.assert_allclose(x[0], preprocess_input(s.image.astype(np.float32)).numpy(), atol=1e-6)
        np.testing.assert_array_equal(y[0], s.label)


def test_scores_of_hand_made_confusion_matrices():
    # rows true, columns predicted
    c = np.array([[50, 2, 3], [4, 20, 1], [0, 0, 0]])
    s = metrics.scores(c)
    iou0, iou1 = 50 / (55 + 54 - 50), 20 / (25 + 22 - 20)  # tp / (row + column - tp)
    assert s.iou[0] == pytest.approx(iou0) and s.iou[1] == pytest.approx(iou1)
    assert s.iou[2] == 0.0  # predicted (4 pixels) but never present: IoU 0, counted
    assert s.miou == pytest.approx((iou0 + iou1 + 0) / 3)
    assert s.pixel_accuracy == pytest.approx(70 / 80)
    assert s.accuracy[0] == pytest.approx(50 / 55) and np.isnan(s.accuracy[2])
    absent = metrics.scores(np.array([[5, 0, 0], [1, 3, 0], [0, 0, 0]]))
    assert np.isnan(absent.iou[2]) and absent.miou == pytest.approx((5 / 6 + 3 / 4) / 2)  # left out of the mean
    perfect = metrics.scores(np.diag([3, 4, 5]))
    assert perfect.miou == 1.0 and perfect.pixel_accuracy == 1.0


def test_confusion_matrix_counts_pixels_and_skips_the_ignore_label():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (3, 20, 30))
    labels[:, :2] = 255
    predictions = rng.integers(0, 4, (3, 20, 30))
    c = metrics.confusion_matrix(labels, predictions, 4)
    for t in range(4):
        for p in range(4):
            assert c[t, p] == np.sum((labels == t) & (predictions == p))
    assert c.sum() == np.sum(labels != 255)
    # Keras' MeanIoU (our metric on logits) agrees with the scores of the confusion matrix
    keras_miou = MeanIoU(4)
    keras_miou.update_state(labels, np.eye(4)[predictions])
    assert float(keras_miou.result()) == pytest.approx(metrics.scores(c).miou, rel=1e-5)
    with pytest.raises(ValueError, match=r"predictions must lie in 0..3"):
        metrics.confusion_matrix(labels, predictions + 1, 4)
