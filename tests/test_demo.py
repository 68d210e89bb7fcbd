"""`make demo` (its small mode: training included), as the README writes it, and the pictures."""
import os
import re
import shlex
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tf_keras

from convnext_tf.backbones.model import preprocess_input
from convnext_tf.tasks import demo, export, metrics, shapes
from convnext_tf.tasks.visualize import colorize, draw_boxes, overlay, pca_rgb, plot_curves, voc_palette

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_GAIN = 0.25  # small mode's held-out mIoU must beat the all-background baseline by this much
INT8_MIOU_LOSS = 0.03  # full-integer TFLite of the trained model: at most this much held-out mIoU lost
INT8_CHANGED = 0.02  # and at most this share of the held-out pixels labelled differently


def interpreter_env(**extra: str) -> dict:
    """The environment with this interpreter's bin first on PATH (its `convnext-tf`, its `python`)."""
    return dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"], **extra)


def make(command: str, out, cwd) -> str:
    """A README `make ...` command: the Makefile's recipe with this interpreter, in small mode (the
    full run is measured in the README), writing into `out`; returns what it printed."""
    argv = ["make", "-f", os.path.join(ROOT, "Makefile"), "-o", ".venv/.installed", "-o", ".venv/.installed-demo",
            f"PY={sys.executable}", f"OUT={out}", *shlex.split(command)[1:]]
    run = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=interpreter_env(CONVNEXT_TF_SMALL="1"),
                         timeout=900)
    assert run.returncode == 0, f"{command}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    return run.stdout


def test_make_demo_learns_and_writes_its_pictures(tmp_path):
    printed = make("make demo", tmp_path / "out", tmp_path)  # the README's first command (test_readme leaves it to here)
    found = re.search(r"mIoU (\d\.\d{3}) on 24 held-out images; predicting background everywhere gives (\d\.\d{3})", printed)
    assert found, printed[-2000:]
    miou, baseline = map(float, found.groups())
    # the baseline from the held-out labels alone: background's IoU is its share of the labelled
    # pixels, every other class present scores 0
    labels = np.concatenate([s.label.ravel() for s in shapes.samples(24, demo.VAL_SEED)])
    labels = labels[labels != 255]
    assert baseline == pytest.approx(np.mean(labels == 0) / len(np.unique(labels)), abs=5e-4)
    assert miou > baseline + MIN_GAIN, printed
    out = tmp_path / "out"
    photo = cv2.imread(str(out / "photo.png"))
    assert photo.shape == (300 + 28, 3 * 451 + 2 * 8, 3)  # photo | truth | prediction at the photo's size
    grid = cv2.imread(str(out / "predictions.png"))
    assert grid.shape[0] == 4 * (160 + 28) + 3 * 8
    features = cv2.imread(str(out / "features.png"))
    assert features.shape[0] == 256 + 28 and features.std() > 10
    assert cv2.imread(str(out / "curves.png")) is not None
    # the saved best model reloads and predicts the photo at its own size
    model = tf_keras.models.load_model(out / "model.keras")
    assert model(np.zeros((1, 300, 451, 3), np.float32)).shape == (1, 300, 451, len(shapes.CLASSES))
    # full-integer TFLite of the trained model, uint8 pixels in, on the held-out images at their own sizes
    path = str(out / "demo_int8.tflite")
    export.export(model, path, export.ExportConfig(format="tflite", quantize="int8", include_preprocessing=True,
                                                   calibration_images=16, verify=False), log=None)
    run, held_out, n = export.Runner(path), list(shapes.samples(24, demo.VAL_SEED)), len(shapes.CLASSES)
    keras_labels = [model(preprocess_input(s.image[None])).numpy()[0].argmax(-1) for s in held_out]
    int8_labels = [run(s.image[None])["logits"][0].argmax(-1) for s in held_out]
    keras_miou, int8_miou = (
        metrics.scores(sum(metrics.confusion_matrix(s.label, l, n) for s, l in zip(held_out, labels))).miou
        for labels in (keras_labels, int8_labels))
    assert int8_miou >= keras_miou - INT8_MIOU_LOSS, (keras_miou, int8_miou)
    changed = np.mean(np.concatenate([(a != b).ravel() for a, b in zip(keras_labels, int8_labels)]))
    assert changed <= INT8_CHANGED, changed


def test_pca_rgb_first_channel_follows_main_direction():
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((20, 30))
    direction = rng.standard_normal(16)
    feats = latent[..., None] * direction * 10 + rng.standard_normal((20, 30, 16)) * 0.1
    rgb = pca_rgb(feats)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    r = np.corrcoef(rgb[..., 0].ravel().astype(float), latent.ravel())[0, 1]
    assert abs(r) > 0.95
    feats[3, 4, 5] = np.inf
    with pytest.raises(ValueError, match="1 non-finite values"):
        pca_rgb(feats)


def test_voc_palette_known_colours():
    p = voc_palette()
    # colours of the PASCAL VOC devkit: background, aeroplane, bicycle, bird, boat, person, void
    known = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
             15: (192, 128, 128), 255: (224, 224, 192)}
    for label, rgb in known.items():
        assert tuple(p[label]) == rgb


def test_overlay_pixels():
    image = np.array([[[100, 50, 200], [10, 20, 30]], [[255, 255, 255], [0, 0, 0]]], np.uint8)
    labels = np.array([[1, 0], [255, 2]])
    assert colorize(labels)[0, 0].tolist() == [128, 0, 0]
    out = overlay(image, labels, alpha=0.25)
    assert out[0, 0].tolist() == [round(0.75 * 100 + 0.25 * 128), round(0.75 * 50), round(0.75 * 200)]
    assert out[0, 1].tolist() == [round(0.75 * 10), 15, round(0.75 * 30)]  # label 0 is black
    assert out[1, 0].tolist() == [255, 255, 255]  # ignored pixel keeps the image
    assert out[1, 1].tolist() == [0, 32, 0]
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, labels[:1])


def test_draw_boxes_outlines_each_box_in_its_class_colour():
    image = np.full((60, 80, 3), 255, np.uint8)
    out = draw_boxes(image, np.array([[10, 20, 40, 60], [0, 0, 5, 5]]), [3, 1], scores=[0.9, 0.1], min_score=0.5)
    assert out[25, 20].tolist() == voc_palette()[3].tolist() and out[10, 40].tolist() == voc_palette()[3].tolist()
    assert out[25, 40].tolist() == [255, 255, 255]  # inside stays
    assert out[2, 2].tolist() == [255, 255, 255]  # the low-score box is not drawn
    assert np.array_equal(image, np.full((60, 80, 3), 255, np.uint8))  # the input is not changed


def test_curves_picture_has_a_panel_per_metric():
    picture = plot_curves({"loss": [1.0, 0.5, 0.2], "val_loss": [1.1, 0.7, 0.4], "mean_iou": [0.1, 0.4, 0.6]})
    assert picture.shape == (240, 2 * 360, 3) and picture.dtype == np.uint8
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])
    assert (picture[:, :360] == blue).all(-1).any() and (picture[:, :360] == orange).all(-1).any()
    assert not (picture[:, 360:] == orange).all(-1).any()  # no validation series for mean_iou
