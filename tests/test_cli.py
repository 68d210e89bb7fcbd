"""The everyday subcommands: features, classify, train-segmentation and segment, and their errors."""
import os
import re

import cv2
import numpy as np
import pytest
import tf_keras
import torch
from PIL import Image
from reference import hf_classifier, hf_to_official

from convnext_tf.tasks import cli, imagenet, predict_sliding, shapes
from convnext_tf.tasks.visualize import read_rgb


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A photo at its own odd size (451x300) as PNG and a resized copy (257x193) as JPEG."""
    root = tmp_path_factory.mktemp("images")
    photo = cv2.imread(shapes.photo_path())
    cv2.imwrite(str(root / "cat.png"), photo)
    cv2.imwrite(str(root / "small.jpg"), cv2.resize(photo, (257, 193)))
    cv2.imwrite(str(root / "tiny.png"), photo[:20, :20])
    (root / "notes.jpg").write_text("not an image")
    return root


def run(argv, capsys) -> str:
    cli.main([str(a) for a in argv])
    return capsys.readouterr().out


def fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(a) for a in argv])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("convnext-tf: error: ") and err.count("\n") == 1, err  # one line, no traceback
    return err


def test_features_prints_the_pyramid_and_writes_a_picture_per_image(images, tmp_path, capsys):
    out = run(["features", images / "cat.png", images / "small.jpg", "--model", "convnext_atto", "--out", tmp_path], capsys)
    for name, (h, w) in (("cat", (300, 451)), ("small", (193, 257))):
        for level, k in zip(range(2, 6), (4, 2, 2, 2)):  # valid convolutions floor the sizes, as in PyTorch
            h, w = (h - k) // k + 1, (w - k) // k + 1
            channels = (40, 80, 160, 320)[level - 2]
            assert re.search(rf"^\s+{level}\s+{2 ** level}\s+{channels}\s+{h} x {w}$", out, re.M), (level, out)
        picture = cv2.imread(str(tmp_path / f"{name}_features.png"))
        assert picture.shape[0] == 256 + 28 and picture.std() > 10


def test_classify_prints_the_reference_top_classes_with_names(images, tmp_path, capsys):
    reference = hf_classifier("convnext_atto")
    torch.save(hf_to_official(reference.state_dict()), tmp_path / "atto.pth")
    out = run(["classify", images / "cat.png", "--model", "convnext_atto", "--weights", tmp_path / "atto.pth",
               "--topk", 3], capsys)
    x = imagenet.preprocess(read_rgb(images / "cat.png"), 224)  # the official eval preprocessing
    with torch.no_grad():
        probs = torch.softmax(reference(torch.from_numpy(x.transpose(2, 0, 1)[None].copy())).logits[0].double(), 0).numpy()
    lines = out.strip().splitlines()[1:]
    assert len(lines) == 3
    for line, index in zip(lines, np.argsort(-probs)[:3]):
        prob, idx, synset, name = re.match(r"\s*([\d.]+)%\s+(\d+) (n\d{8})  (.+)$", line).groups()
        assert int(idx) == index and abs(float(prob) - 100 * probs[index]) < 0.006
        assert synset == imagenet.synsets()[index] and name == imagenet.class_names()[index]
    # the names file lines up with the synsets: class 281 is n02123045, the tabby cat
    assert imagenet.synsets()[281] == "n02123045" and imagenet.class_names()[281] == "tabby"
    assert len(imagenet.class_names()) == 1000


def test_train_segmentation_on_a_folder_then_segment_with_the_saved_model(images, tmp_path, capsys):
    data = shapes.write_folder(tmp_path / "data", 10, seed=3, size_range=(64, 100))
    out = run(["train-segmentation", "--data", data, "--model", "convnextv2_atto", "--neck", "fpn", "--epochs", 2,
               "--steps-per-epoch", 2, "--crop", 64, "--batch-size", 2, "--val-split", 0.2, "--out", tmp_path / "run"],
              capsys)
    assert "8 to train on, 2 to validate; 6 classes" in out and "best validation mIoU" in out
    assert (tmp_path / "run" / "model.keras").is_file() and cv2.imread(str(tmp_path / "run" / "curves.png")) is not None
    model = tf_keras.models.load_model(tmp_path / "run" / "model.keras")

    out = run(["segment", images / "cat.png", images / "small.jpg", "--weights", tmp_path / "run" / "model.keras",
               "--out", tmp_path / "seg"], capsys)
    for stem in ("cat", "small"):
        image = read_rgb(images / f"{stem}{'.png' if stem == 'cat' else '.jpg'}")
        with Image.open(tmp_path / "seg" / f"{stem}_labels.png") as labels:  # a palette PNG at the image's size
            assert labels.mode == "P" and labels.size == (image.shape[1], image.shape[0])
            expected = model((image[None].astype(np.float32) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
                             training=False).numpy()[0].argmax(-1)
            np.testing.assert_array_equal(np.asarray(labels), expected)
        assert cv2.imread(str(tmp_path / "seg" / f"{stem}_overlay.png")).shape == image.shape
    run(["segment", images / "small.jpg", "--weights", tmp_path / "run" / "model.keras", "--slide", "--crop", 64,
         "--stride", 48, "--out", tmp_path / "slide"], capsys)
    image = read_rgb(images / "small.jpg")
    x = ((image.astype(np.float32) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32)
    with Image.open(tmp_path / "slide" / "small_labels.png") as labels:
        np.testing.assert_array_equal(np.asarray(labels), predict_sliding(model, x, 64, 48).argmax(-1))


@pytest.mark.parametrize("command", ["features", "segment", "classify", "train-segmentation"])
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert re.search(rf"example:\n  convnext-tf {command} ", capsys.readouterr().out)


def test_errors_are_one_line_and_name_the_problem(images, tmp_path, capsys):
    missing = tmp_path / "missing.jpg"
    assert f"Cannot read an image from '{missing}'" in fails(["features", missing], capsys)
    assert "notes.jpg" in fails(["features", images / "notes.jpg"], capsys)
    err = fails(["classify", images / "tiny.png", "--model", "convnext_atto"], capsys)
    assert "tiny.png is 20x20; ConvNeXt needs at least 32x32" in err
    assert "convnext_hyper" in fails(["features", images / "small.jpg", "--model", "convnext_hyper"], capsys)
    err = fails(["classify", images / "small.jpg", "--model", "convnext_atto", "--weights", "imagenet_2k"], capsys)
    assert "imagenet_2k" in err and "imagenet_1k" in err  # lists what the variant has
    err = fails(["segment", images / "small.jpg", "--model", "deeplab_convnext_tiny", "--weights", "x.pth"], capsys)
    assert "expected <neck>_<variant>" in err
    assert "No saved model" in fails(["segment", images / "small.jpg", "--weights", tmp_path / "none.keras"], capsys)
    assert "No images folder" in fails(["train-segmentation", "--data", tmp_path, "--out", tmp_path / "o"], capsys)
    err = fails(["classify", images / "small.jpg", "--model", "convnext_atto", "--topk", 0], capsys)
    assert "--topk must be at least 1" in err
    assert os.listdir(tmp_path) == []  # nothing written by a failed command
