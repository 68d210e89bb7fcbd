"""`make demo` and the feature pictures."""
import cv2
import numpy as np

from convnext_tf.tasks import demo
from convnext_tf.tasks.visualize import pca_rgb


def test_demo_prints_stages_and_writes_png(tmp_path, capsys):
    demo.main(["--model", "convnext_atto", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    # chelsea.png is 451x300; sizes floor as PyTorch's valid convolutions do
    h, w, rows = 300, 451, []
    for level, k in zip(range(2, 6), (4, 2, 2, 2)):
        h, w = (h - k) // k + 1, (w - k) // k + 1
        rows.append(f"{level:>5} {2 ** level:>6}")
        assert f"{h} x {w}" in out
    assert all(r in out for r in rows)
    image = cv2.imread(str(tmp_path / "features.png"))
    assert image is not None and image.shape[0] == 256 + 28 and image.shape[2] == 3
    assert image.std() > 10  # not a blank picture
    seg = cv2.imread(str(tmp_path / "segmentation.png"))
    assert seg.shape == (300 + 28, 451 * 2 + 8, 3)  # photo and overlay side by side at the photo's size
    assert "UperNet convnext_atto: logits at 451x300" in out


def test_pca_rgb_first_channel_follows_main_direction():
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((20, 30))
    direction = rng.standard_normal(16)
    feats = latent[..., None] * direction * 10 + rng.standard_normal((20, 30, 16)) * 0.1
    rgb = pca_rgb(feats)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    r = np.corrcoef(rgb[..., 0].ravel().astype(float), latent.ravel())[0, 1]
    assert abs(r) > 0.95


def test_voc_palette_known_colours():
    from convnext_tf.tasks.visualize import voc_palette

    p = voc_palette()
    # colours of the PASCAL VOC devkit: background, aeroplane, bicycle, bird, boat, person, void
    known = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
             15: (192, 128, 128), 255: (224, 224, 192)}
    for label, rgb in known.items():
        assert tuple(p[label]) == rgb


def test_overlay_pixels():
    from convnext_tf.tasks.visualize import colorize, overlay

    image = np.array([[[100, 50, 200], [10, 20, 30]], [[255, 255, 255], [0, 0, 0]]], np.uint8)
    labels = np.array([[1, 0], [255, 2]])
    assert colorize(labels)[0, 0].tolist() == [128, 0, 0]
    out = overlay(image, labels, alpha=0.25)
    assert out[0, 0].tolist() == [round(0.75 * 100 + 0.25 * 128), round(0.75 * 50), round(0.75 * 200)]
    assert out[0, 1].tolist() == [round(0.75 * 10), 15, round(0.75 * 30)]  # label 0 is black
    assert out[1, 0].tolist() == [255, 255, 255]  # ignored pixel keeps the image
    assert out[1, 1].tolist() == [0, 32, 0]
    import pytest

    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, labels[:1])
