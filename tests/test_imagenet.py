"""ImageNet evaluation: official preprocessing against PIL, labels from XML, predictions against PyTorch."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from reference import hf_classifier, hf_to_official

from convnext_tf.backbones import create_model, load_state_dict
from convnext_tf.tasks import cli, imagenet
from convnext_tf.tasks.shapes import photo_path

PHOTO = cv2.cvtColor(cv2.imread(photo_path()), cv2.COLOR_BGR2RGB)  # a real photo, 451x300
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def pil_reference(image, resolution):
    """The official eval transform written with PIL: Resize(int(res / 0.875), BICUBIC) + CenterCrop."""
    img = Image.fromarray(image)
    if resolution >= 384:
        img = img.resize((resolution, resolution), Image.BICUBIC)
    else:
        size = int(resolution / 0.875)
        w, h = img.size
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = int(round((nw - resolution) / 2.0)), int(round((nh - resolution) / 2.0))
        img = img.crop((left, top, left + resolution, top + resolution))
    return np.asarray(img, np.float32) / 255.0


@pytest.mark.parametrize("crop", ["landscape", "portrait", "square", "small"])
@pytest.mark.parametrize("resolution", [224, 384])
def test_preprocessing_matches_pil(crop, resolution):
    image = {"landscape": PHOTO, "portrait": PHOTO[:, 120:320], "square": PHOTO[:, 75:375],
             "small": PHOTO[100:220, 150:300]}[crop]  # 'small' is upsampled
    ours = imagenet.preprocess(image, resolution) * STD + MEAN
    ref = pil_reference(image, resolution)
    assert ours.shape == ref.shape == (resolution, resolution, 3)
    diff = np.abs(ours - ref)
    assert diff.mean() < 0.5 / 255 and diff.max() < 3 / 255, (diff.mean() * 255, diff.max() * 255)


def test_synsets_are_tfds_sorted_list():
    import tensorflow_datasets

    path = os.path.join(os.path.dirname(tensorflow_datasets.__file__), "datasets/imagenet2012/labels.txt")
    with open(path) as f:
        expected = f.read().split()
    assert imagenet.synsets() == expected == sorted(expected) and len(expected) == 1000


SYNSETS = ["n01440764", "n02123045", "n02123159", "n15075141"]


def make_ilsvrc(root, n=6):
    """JPEGs and bounding-box XMLs named as in ILSVRC2012 val; labels cycle through SYNSETS."""
    rng = np.random.default_rng(0)
    images, annotations, folders = root / "val", root / "bbox", root / "classes"
    for d in (images, annotations):
        d.mkdir(parents=True)
    for i in range(n):
        h, w = 200 + 37 * i, 300 - 23 * i
        y, x = rng.integers(0, 300 - min(h, 300) + 1), rng.integers(0, 451 - w + 1)
        img = cv2.resize(PHOTO[y:y + min(h, 300), x:x + w], (w, h))
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        cv2.imwrite(str(images / f"{stem}.JPEG"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        synset = SYNSETS[i % len(SYNSETS)]
        (annotations / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}</filename><size><width>{w}</width><height>{h}</height></size>"
            f"<object><name>{synset}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>{w}</xmax><ymax>{h}</ymax>"
            "</bndbox></object></annotation>"
        )
        (folders / synset).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folders / synset / f"{stem}.JPEG"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return images, annotations, folders


def test_evaluation_matches_reference_predictions(tmp_path):
    images, annotations, folders = make_ilsvrc(tmp_path)
    ref = hf_classifier("convnext_atto", seed=7)
    model = create_model("convnext_atto")
    load_state_dict(model, ref.state_dict())
    results = imagenet.evaluate(model, str(images), str(annotations), batch_size=4, verbose=False)
    samples = imagenet.read_dataset(str(images), str(annotations))
    assert [imagenet.synsets()[label] for _, label in samples] == [SYNSETS[i % 4] for i in range(6)]
    x = np.stack([imagenet.preprocess(imagenet.load_image(p)) for p, _ in samples])
    with torch.no_grad():
        ref_logits = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy()
    ref_pred = ref_logits.argmax(1)
    assert [results["predictions"][os.path.basename(p)] for p, _ in samples] == ref_pred.tolist()
    labels = np.array([label for _, label in samples])
    ref_top5 = np.argsort(-ref_logits, 1)[:, :5]
    assert results["top1"] == pytest.approx(100 * np.mean(ref_pred == labels))
    assert results["top5"] == pytest.approx(100 * np.mean(np.any(ref_top5 == labels[:, None], 1)))
    by_folder = imagenet.evaluate(model, str(folders), batch_size=4, verbose=False)
    assert by_folder["predictions"] == results["predictions"]


def test_cli_convert_verify_and_eval(tmp_path, capsys):
    ref = hf_classifier("convnextv2_atto", seed=8)
    torch.save(hf_to_official(ref.state_dict()), tmp_path / "v2.pt")
    out = tmp_path / "v2.weights.h5"
    cli.main(["convert", str(tmp_path / "v2.pt"), "--model", "convnextv2_atto", "--out", str(out), "--verify"])
    printed = capsys.readouterr().out
    assert "head of 1000 classes" in printed and str(out) in printed
    assert float(printed.split("reference: ")[1].split()[0]) < 1e-4
    images, annotations, _ = make_ilsvrc(tmp_path / "data", n=3)
    cli.main(["eval-imagenet", "--data", str(images), "--annotations", str(annotations), "--model", "convnextv2_atto",
              "--weights", str(out), "--batch-size", "2", "--out", str(tmp_path / "r.json")])
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["images"] == 3 and 0 <= results["top1"] <= results["top5"] <= 100


def test_cli_errors_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["convert", "imagenet_22k", "--model", "convnext_atto"])
    assert "No checkpoint 'imagenet_22k' for convnext_atto" in capsys.readouterr().err
