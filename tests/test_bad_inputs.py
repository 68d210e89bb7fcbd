"""Bad files, arguments and inputs get clear errors; saving round-trips; the download cache keeps its promises.

One test (or a few) per item of issue 8, in its order.
"""
import io
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch
from reference import TINY_DEPTHS, TINY_DIMS, hf_classifier, hf_to_official, hf_to_timm
from safetensors.torch import save as safetensors_bytes
from test_download import Server, cached_files, official, torch_bytes
from test_imagenet import make_ilsvrc

from convnext_tf.backbones import (
    ConvNeXtBackbone, CheckpointMismatchError, catalogue, convnext_atto, convnextv2_atto, create_model, download,
    load_state_dict, load_weights, read_checkpoint, save_weights,
)
from convnext_tf.backbones.layers import StochasticDepth
from convnext_tf.backbones.weights import CheckpointError, CheckpointReadError
from convnext_tf.necks import FPN, UperNet
from convnext_tf.tasks import cli, imagenet
from convnext_tf.tasks.segmentation import (
    MeanIoU, PixelAccuracy, build_segmentation_model, predict_sliding, segmentation_loss,
)

RNG = np.random.default_rng(0)


def images(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# 1. bare file names ---------------------------------------------------------------------------


def test_save_weights_and_convert_to_a_bare_file_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = convnext_atto(input_shape=(None, None, 3))
    save_weights(model, "convnext_atto.weights.h5")
    again = convnext_atto(input_shape=(None, None, 3), weights="convnext_atto.weights.h5")
    x = images(1, 64, 64, 3)
    np.testing.assert_array_equal(again(x).numpy(), model(x).numpy())
    torch.save(hf_to_official(hf_classifier("convnext_atto").state_dict()), "atto.pth")
    cli.main(["convert", "atto.pth", "--model", "convnext_atto", "--out", "atto.weights.h5"])
    cli.main(["convert", "atto.pth", "--model", "convnext_atto"])  # default out: atto.weights.h5 here
    assert "wrote atto.weights.h5" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["atto.pth", "atto.weights.h5", "convnext_atto.weights.h5"]


# 2. sliding inference ------------------------------------------------------------------------


def test_predict_sliding_refuses_gaps_and_bad_shapes():
    model = build_segmentation_model("convnext_atto", 2, channels=8, aux_head=False)
    image = np.zeros((100, 100, 3), np.float32)
    with pytest.raises(ValueError, match=r"stride \(64, 64\) must not exceed crop_size \(40, 40\)"):
        predict_sliding(model, image, crop_size=40, stride=64)
    for stride in (0, -3):
        with pytest.raises(ValueError, match="stride must be a positive integer"):
            predict_sliding(model, image, crop_size=64, stride=stride)
    with pytest.raises(ValueError, match=r"images must be \(H, W, C\) or \(N, H, W, C\); got shape \(100, 100\)"):
        predict_sliding(model, image[..., 0], crop_size=64, stride=32)
    out = predict_sliding(model, image, crop_size=64, stride=64)  # stride == crop: tiles, no NaN
    assert np.all(np.isfinite(out))


# 3. and 21. eval-imagenet --------------------------------------------------------------------


@pytest.mark.parametrize("batch", ["0", "-1"])
def test_eval_imagenet_batch_size_is_checked(tmp_path, capsys, batch):
    data, annotations, _ = make_ilsvrc(tmp_path, n=2)
    with pytest.raises(SystemExit) as e:
        cli.main(["eval-imagenet", "--data", str(data), "--annotations", str(annotations), "--model", "convnext_atto",
                  "--weights", "none.pth", "--batch-size", batch])
    assert e.value.code == 1
    assert f"--batch-size must be at least 1; got {batch}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        imagenet.evaluate(create_model("convnext_atto"), str(data), str(annotations), batch_size=0)


def test_eval_imagenet_checks_the_data_before_building_the_model(tmp_path, capsys, monkeypatch):
    built = []
    monkeypatch.setattr("convnext_tf.tasks.cli.create_model", lambda *a, **k: built.append(1))
    (tmp_path / "empty").mkdir()
    for data in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(SystemExit):
            cli.main(["eval-imagenet", "--data", str(data), "--model", "convnext_atto"])
        err = capsys.readouterr().err
        assert str(data) in err and ("No images found" in err if data.exists() else "No such file or directory" in err)
    assert built == []


# 4. drop path --------------------------------------------------------------------------------


def test_drop_path_rate_one_drops_the_branch_and_bad_rates_are_refused():
    shortcut, branch = images(4, 5, 5, 3), images(4, 5, 5, 3)
    out = StochasticDepth(1.0)([shortcut, branch], training=True).numpy()
    np.testing.assert_array_equal(out, shortcut)  # timm: every branch dropped, nothing divided by 0
    model = create_model("convnext_atto", drop_path_rate=1.0, input_shape=(64, 64, 3))
    assert np.all(np.isfinite(model(images(2, 64, 64, 3), training=True).numpy()))
    for rate in (-0.1, 1.5, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="drop_path_rate must be"):
            create_model("convnext_atto", drop_path_rate=rate)
        with pytest.raises(ValueError, match="drop_path_rate must be"):
            ConvNeXtBackbone("atto", drop_path_rate=rate)


# 5. non-finite weights -----------------------------------------------------------------------


def test_nan_or_inf_in_a_checkpoint_is_refused(tmp_path):
    sd = {k: v.clone() for k, v in hf_classifier("convnext_atto").state_dict().items()}
    sd["convnext.encoder.stages.1.layers.0.dwconv.weight"][0, 0, 0, 0] = float("nan")
    sd["classifier.bias"][3] = float("inf")
    model = create_model("convnext_atto")
    before = [w.copy() for w in model.get_weights()]
    torch.save(sd, tmp_path / "nan.bin")
    with pytest.raises(CheckpointError, match=r"nan\.bin: Checkpoint value 'convnext\.encoder\.stages\.1\.layers\.0\.dwconv"
                                              r"\.weight' holds NaN or Inf \(1 of"):
        load_weights(model, tmp_path / "nan.bin")
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))
    load_state_dict(model, sd, allow_nonfinite=True)
    assert np.isinf(model.get_layer("head.fc").bias.numpy()[3])


# 6., 7., 8., 9. saving and reloading ---------------------------------------------------------


def preprocessing_input():
    raw = tf_keras.Input((None, None, 3))
    x = tf_keras.layers.Rescaling(1 / 255.0)(raw)
    x = tf_keras.layers.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.04, 0.05, 0.06])(x)
    return raw, x


def make_model(kind):
    """A small model of each class the library has but the classifier (test_models.test_save_and_reload
    round-trips V1 and V2's), on a custom tiny ConvNeXt, with non-trivial weights."""
    if kind == "backbone":
        model = ConvNeXtBackbone(depths=TINY_DEPTHS, dims=TINY_DIMS, min_level=3, input_tensor=preprocessing_input()[1])
    elif kind in ("upernet", "fpn"):
        specs = ConvNeXtBackbone(depths=TINY_DEPTHS, dims=TINY_DIMS).output_specs
        model = UperNet(specs, channels=16) if kind == "upernet" else FPN(specs, min_level=3, max_level=6, num_filters=8)
    else:
        backbone = ConvNeXtBackbone(version="v2", depths=TINY_DEPTHS, dims=TINY_DIMS, input_tensor=preprocessing_input()[1])
        model = build_segmentation_model(backbone, 3, neck=kind.split("_")[1], channels=16, aux_channels=8)
    model.set_weights([RNG.uniform(0.5, 1.5, w.shape).astype(w.dtype) * (0.1 if w.ndim > 1 else 1)
                       for w in model.get_weights()])  # away from the initial values, BatchNorm statistics included
    return model


def model_input(kind, h, w):
    if kind in ("upernet", "fpn"):
        return {str(l): images(1, -(-h // 2**l), -(-w // 2**l), c) for l, c in zip(range(2, 6), TINY_DIMS)}
    return RNG.uniform(0, 255, (2, h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["savedmodel", "keras", "h5"])
@pytest.mark.parametrize("kind", ["backbone", "upernet", "fpn", "segmentation_upernet", "segmentation_fpn"])
def test_every_model_round_trips(kind, fmt, tmp_path):
    model = make_model(kind)
    path = str(tmp_path / {"savedmodel": "saved", "keras": "m.keras", "h5": "m.h5"}[fmt])
    if fmt == "h5" and kind.startswith("segmentation"):
        with pytest.raises(NotImplementedError, match="SavedModel"):  # Keras' own refusal, before writing
            model.save(path)
        assert not os.path.exists(path)
        return
    model.save(path)
    again = tf_keras.models.load_model(path)
    assert type(again) is type(model) and again.name == model.name
    for h, w in ((64, 96), (45, 77)):
        x = model_input(kind, h, w)
        tf.nest.map_structure(np.testing.assert_array_equal, again(x, training=False), model(x, training=False))
    if kind == "backbone":  # the preprocessing layers came back too: the model takes raw pixels
        assert [type(l).__name__ for l in again.layers[:3]] == ["InputLayer", "Rescaling", "Normalization"]


def test_saved_models_serve_any_size_with_outputs_named_by_meaning(tmp_path):
    backbone = ConvNeXtBackbone(version="v2", depths=TINY_DEPTHS, dims=TINY_DIMS)
    seg = build_segmentation_model(ConvNeXtBackbone(version="v2", depths=TINY_DEPTHS, dims=TINY_DIMS), 3, channels=16)
    for name, model in (("backbone", backbone), ("seg", seg)):
        model.save(str(tmp_path / name))
    serve_backbone = tf.saved_model.load(str(tmp_path / "backbone")).signatures["serving_default"]
    serve_seg = tf.saved_model.load(str(tmp_path / "seg")).signatures["serving_default"]
    for h, w in ((64, 64), (96, 128), (375, 500)):
        x = images(1, h, w, 3)
        out = serve_backbone(tf.constant(x))
        assert sorted(out) == ["2", "3", "4", "5"]
        for level, value in backbone(x).items():
            np.testing.assert_allclose(out[level].numpy(), value.numpy(), rtol=1e-5, atol=1e-5)
        logits = serve_seg(tf.constant(x))
        assert list(logits) == ["logits"] and logits["logits"].shape == (1, h, w, 3)
        np.testing.assert_allclose(logits["logits"].numpy(), seg(x).numpy(), rtol=1e-5, atol=1e-5)


def test_segmentation_model_builds_on_a_fixed_input_size():
    backbone = ConvNeXtBackbone("atto", input_specs=tf_keras.layers.InputSpec(shape=[None, 96, 128, 3]))
    model = build_segmentation_model(backbone, 2, channels=8)
    assert model(images(1, 96, 128, 3)).shape == (1, 96, 128, 2)


# 10.-13. the download cache ------------------------------------------------------------------


V2 = official(catalogue.find("convnextv2_atto", "fcmae_imagenet_1k", 224))  # Meta's .pt (timm's: 404 here)
V2_FILE = "downloads/convnextv2_atto_fcmae_imagenet_1k_224.pt"
V2_CONVERTED = "converted/convnextv2_atto_fcmae_imagenet_1k_224.weights.h5"


@pytest.fixture(scope="module")
def v2_bytes():
    return torch_bytes(hf_to_official(hf_classifier("convnextv2_atto", seed=5).state_dict()))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(download.HOME_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def serve(monkeypatch, files):
    srv = Server(files)
    monkeypatch.setenv(catalogue.BASE_URL_ENV, srv.url)
    return srv


def test_short_download_without_content_length_is_not_cached(cache, monkeypatch, v2_bytes):
    srv = serve(monkeypatch, {V2.path: (v2_bytes[: len(v2_bytes) // 2], {})})  # no Content-Length, cut short
    with pytest.raises(download.DownloadError, match=r"not a checkpoint \(\d+ bytes\)"):
        convnextv2_atto(weights="fcmae_imagenet_1k")
    assert cached_files(cache.parent) == []
    srv.files[V2.path] = (v2_bytes, {})
    convnextv2_atto(weights="fcmae_imagenet_1k")
    assert cached_files(cache.parent) == [V2_CONVERTED, V2_FILE]
    srv.close()


@pytest.mark.parametrize("damaged", [V2_FILE, V2_CONVERTED])
def test_corrupt_cache_file_is_removed_and_made_again(cache, monkeypatch, v2_bytes, damaged):
    srv = serve(monkeypatch, {V2.path: (v2_bytes, {"Content-Length": str(len(v2_bytes))})})
    expected = convnextv2_atto(input_shape=(None, None, 3), weights="fcmae_imagenet_1k")
    if damaged == V2_FILE:
        os.remove(cache / V2_CONVERTED)  # so the download is read again
    (cache / damaged).write_bytes(b"\x00garbage" * 10)
    with pytest.warns(UserWarning, match=f"cache file .*{os.path.basename(damaged)} was corrupt"):
        model = convnextv2_atto(input_shape=(None, None, 3), weights="fcmae_imagenet_1k")
    x = images(1, 64, 64, 3)
    np.testing.assert_array_equal(model(x).numpy(), expected(x).numpy())
    assert len([r for r in srv.requests if r.endswith(".pt")]) == (2 if damaged == V2_FILE else 1)
    srv.close()


def test_killed_download_leaves_a_temporary_that_is_cleaned_later(cache, monkeypatch, v2_bytes):
    srv = serve(monkeypatch, {V2.path: (v2_bytes, {"Content-Length": str(len(v2_bytes))})})
    code = ("from convnext_tf.backbones import download, catalogue\n"
            "download.download(catalogue.find('convnextv2_atto', 'fcmae_imagenet_1k', 224), progress=False)\n")
    env = dict(os.environ, CONVNEXT_TF_BASE_URL=srv.url + "/slow")
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    downloads = cache / "downloads"
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.stat().st_size > 0 for p in downloads.glob(".*.part*")):
        time.sleep(0.2)
    child.kill()
    child.wait()
    leftovers = list(downloads.glob(".*.part*"))
    assert len(leftovers) == 1 and not (cache / V2_FILE).exists()
    young = downloads / ".other.pth.abc.part.pth"  # as if another process were downloading now
    young.write_bytes(b"x")
    old = time.time() - 2 * 3600
    os.utime(leftovers[0], (old, old))
    convnextv2_atto(weights="fcmae_imagenet_1k")
    assert not leftovers[0].exists() and young.exists()
    assert (cache / V2_FILE).exists()
    srv.close()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_written_files_follow_the_umask(cache, monkeypatch, v2_bytes, tmp_path, umask, mode):
    serve(monkeypatch, {V2.path: (v2_bytes, {"Content-Length": str(len(v2_bytes))})})
    previous = os.umask(umask)
    try:
        model = convnextv2_atto(weights="fcmae_imagenet_1k")
        save_weights(model, tmp_path / "w.weights.h5")
    finally:
        os.umask(previous)
    for path in (cache / V2_FILE, cache / V2_CONVERTED, tmp_path / "w.weights.h5"):
        assert oct(os.stat(path).st_mode & 0o777) == oct(mode), path


def test_a_web_page_is_a_download_error_naming_what_came(cache, monkeypatch):
    page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
    serve(monkeypatch, {V2.path: (page, {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(page))})})
    with pytest.raises(download.DownloadError) as e:
        convnextv2_atto(weights="fcmae_imagenet_1k")
    msg = str(e.value)
    assert V2.url in msg and "content type 'text/html; charset=utf-8'" in msg and "starting '<!DOCTYPE html>" in msg
    assert "weights_only" not in msg and cached_files(cache.parent) == []


def test_a_pickle_with_other_objects_is_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(2)}, "note": io.StringIO}, path)  # a global the reader refuses
    with pytest.raises(CheckpointReadError, match="evil.pth as a PyTorch checkpoint: it holds Python objects") as e:
        read_checkpoint(path)
    assert "weights_only" not in str(e.value)


def test_read_only_cache_converts_in_memory(cache, monkeypatch, v2_bytes):
    (cache / "downloads").mkdir(parents=True)
    (cache / V2_FILE).write_bytes(v2_bytes)
    (cache / "converted").write_text("a file where the folder would go: nothing can be written there")
    monkeypatch.setenv(catalogue.BASE_URL_ENV, "http://127.0.0.1:9")  # offline
    with pytest.warns(UserWarning, match="cannot cache the converted weights"):
        model = convnextv2_atto(input_shape=(None, None, 3), weights="fcmae_imagenet_1k")
    ref = convnextv2_atto(input_shape=(None, None, 3))
    load_state_dict(ref, torch.load(io.BytesIO(v2_bytes), weights_only=True))
    x = images(1, 64, 64, 3)
    np.testing.assert_array_equal(model(x).numpy(), ref(x).numpy())


def test_unusable_cache_folder_names_the_variable(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(download.HOME_ENV, str(tmp_path / "file" / "cache"))
    with pytest.raises(download.DownloadError, match=f"Cannot write the cache folder .*Set {download.HOME_ENV} to a writable folder"):
        convnextv2_atto(weights="fcmae_imagenet_1k")


# 14. bad files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    sd = hf_classifier("convnext_atto").state_dict()
    torch.save(hf_to_official(sd), root / "good.pth")
    (root / "good.safetensors").write_bytes(safetensors_bytes(hf_to_timm(sd, conv_mlp=True)))
    save_weights(create_model("convnext_atto"), root / "good.weights.h5")
    return root


@pytest.mark.parametrize("ext,what", [(".pth", "PyTorch checkpoint"), (".safetensors", "safetensors file"),
                                      (".weights.h5", "Keras HDF5 weights file")])
@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_unreadable_files_name_the_file_and_format(good_files, tmp_path, ext, what, damage):
    data = (good_files / f"good{ext}").read_bytes()
    data = {"empty": b"", "truncated": data[: len(data) // 3], "random": RNG.bytes(5000)}[damage]
    path = tmp_path / f"bad{ext}"
    path.write_bytes(data)
    model = create_model("convnext_atto")
    with pytest.raises(CheckpointReadError, match=f"bad{ext}") as e:
        load_weights(model, path)
    assert what in str(e.value) and ("empty" in str(e.value) if damage == "empty" else "truncated" in str(e.value))


def test_keras_weights_of_another_model(tmp_path):
    other = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2, name="dense")])
    other.save_weights(str(tmp_path / "other.h5"))  # the legacy layout, as save_weights writes it
    with pytest.raises(CheckpointReadError, match=r"other\.h5: Unrecognised checkpoint format"):
        load_weights(create_model("convnext_atto"), tmp_path / "other.h5")
    other.save_weights(str(tmp_path / "other.weights.h5"))  # Keras' saving_lib layout: no layer_names
    with pytest.raises(CheckpointReadError, match=r"other.weights.h5 is an HDF5 file without Keras' 'layer_names'"):
        load_weights(create_model("convnext_atto"), tmp_path / "other.weights.h5")


def test_cli_convert_reports_bad_files_and_outputs(good_files, tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "file").write_text("x")
    cases = [
        (["convert", str(tmp_path / "bad.pth"), "--model", "convnext_atto"], "bad.pth as a PyTorch checkpoint"),
        (["convert", str(good_files / "good.pth"), "--model", "convnext_atto", "--out", str(tmp_path / "x.bin")],
         "needs the extension .weights.h5"),
        (["convert", str(good_files / "good.pth"), "--model", "convnext_atto", "--out", str(tmp_path / "file/x.weights.h5")],
         "Cannot write .*file/x.weights.h5"),
    ]
    for argv, match in cases:
        run = subprocess.run([sys.executable, "-m", "convnext_tf.tasks.cli", *argv], capture_output=True, text=True)
        assert run.returncode == 1, run.stderr
        assert "Traceback" not in run.stderr
        assert re.search(match, run.stderr), run.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.pth", "file"]


# 15. mismatch messages -----------------------------------------------------------------------


def test_mismatch_names_the_checkpoint_variant_and_caps_the_list():
    model = create_model("convnext_atto")
    with pytest.raises(CheckpointMismatchError) as e:
        load_state_dict(model, hf_classifier("convnext_tiny").state_dict())
    msg = str(e.value)
    assert "the checkpoint looks like convnext_tiny" in msg
    assert re.search(r"^- 54 unexpected in the checkpoint: (\S+, ){9}\S+ \.\.\. and 44 more$", msg, re.M), msg
    assert "- ... and 122 more shape mismatches" in msg and len(msg.splitlines()) == 9
    with pytest.raises(CheckpointMismatchError, match="looks like convnextv2_atto"):
        load_state_dict(model, hf_classifier("convnextv2_atto").state_dict())


# 16. small inputs with dynamic sizes ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["classifier", "backbone", "segmentation"])
def test_small_dynamic_inputs_are_refused_at_run_time(kind):
    model = {
        "classifier": lambda: create_model("convnext_atto", input_shape=(None, None, 3)),
        "backbone": lambda: ConvNeXtBackbone("atto"),
        "segmentation": lambda: build_segmentation_model("convnext_atto", 2, channels=8),
    }[kind]()
    serve = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec([None, None, None, 3])])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"at least 32x32 pixels.*\[24\]"):
        serve(tf.zeros([1, 24, 64, 3]))
    with pytest.raises(ValueError, match="Input width is 20, but ConvNeXt needs at least 32 pixels"):
        model(tf.zeros([1, 64, 20, 3]))
    serve(tf.zeros([1, 32, 32, 3]))


# 18. argument checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: create_model("convnext_atto", classes=2.5), r"classes must be a positive integer; got 2\.5"),
        (lambda: create_model("convnext_atto", classes="10"), "classes must be a positive integer; got '10'"),
        (lambda: create_model("convnext_atto", classes=True), "classes must be a positive integer; got True"),
        (lambda: create_model("convnext_atto", weights=123), "weights must be None or a published name"),
        (lambda: create_model("convnext_atto", layer_scale_init_value=-1e-6), "layer_scale_init_value must be a number >= 0"),
        (lambda: create_model("convnext_atto", input_shape=(64, 64, 0)), "Input has 0 channels"),
        (lambda: create_model(42), "Unknown ConvNeXt model 42"),
        (lambda: ConvNeXtBackbone("atto", frozen_stages=True), "frozen_stages must be an integer in -1..4; got True"),
        (lambda: ConvNeXtBackbone("atto", output_norm="yes"), "output_norm must be True or False"),
        (lambda: build_segmentation_model("convnext_atto", 3, channels=0), "channels must be a positive integer"),
        (lambda: build_segmentation_model("convnext_atto", np.float32(3)), "num_classes must be a positive integer"),
        (lambda: build_segmentation_model(create_model("convnext_atto"), 3),
         "backbone must be a ConvNeXtBackbone or a variant name .* got Functional 'convnext_atto'"),
    ],
)
def test_argument_errors_name_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_numpy_integers_are_integers_and_names_are_readable():
    backbone = ConvNeXtBackbone("atto", min_level=np.int64(3), frozen_stages=np.int32(1))
    assert sorted(backbone.output_specs) == ["3", "4", "5"]
    assert backbone.name == "convnext_atto"
    assert create_model("convnext_atto", classes=np.int64(7)).output_shape == (None, 7)
    with pytest.raises(CheckpointMismatchError, match="does not fit model 'convnext_atto'"):
        load_state_dict(ConvNeXtBackbone("atto"), hf_classifier("convnext_femto").state_dict())


# 19. fit with metrics and sample weights -----------------------------------------------------


def test_fit_and_evaluate_with_metrics_and_sample_weights():
    tf.random.set_seed(0)
    model = build_segmentation_model("convnext_atto", 3, channels=8, aux_channels=8)
    x = images(4, 64, 64, 3)
    y = RNG.integers(0, 3, (4, 64, 64)).astype(np.int32)
    y[:, :5] = 255
    weights = RNG.uniform(0, 2, (4, 64, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="compile it without loss="):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.compile(optimizer=tf_keras.optimizers.SGD(0.0), metrics=[MeanIoU(3), PixelAccuracy()])
    history = model.fit(x, y, sample_weight=weights, batch_size=2, epochs=1, verbose=0).history
    assert sorted(history) == ["loss", "mean_iou", "pixel_accuracy"]
    with pytest.raises(ValueError, match="does not take class_weight"):
        model.fit(x, y, class_weight={0: 1.0, 1: 2.0, 2: 1.0}, verbose=0)
    result = model.evaluate(x, y, sample_weight=weights, batch_size=4, verbose=0, return_dict=True)
    # the formulas, in numpy, on the model's own predictions
    logits = model.predict(x, verbose=0)
    pred, valid = logits.argmax(-1), y != 255
    w = weights * valid
    assert result["pixel_accuracy"] == pytest.approx(np.sum(w * (pred == y)) / np.sum(w), rel=1e-5)
    conf = np.zeros((3, 3))
    np.add.at(conf, (y[valid], pred[valid]), weights[valid])
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    assert result["mean_iou"] == pytest.approx(np.mean(np.diag(conf)[union > 0] / union[union > 0]), rel=1e-4)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, np.where(valid, y, 0)[..., None], -1)[..., 0]
    assert result["loss"] == pytest.approx(np.sum(ce * w) / np.sum(valid), rel=1e-4)
    per_image = segmentation_loss(y, logits, sample_weight=np.array([1, 0, 0, 0], np.float32)).numpy()
    assert per_image == pytest.approx(np.sum(ce[0] * valid[0]) / np.sum(valid), rel=1e-4)


# 20. names are resolved before building ------------------------------------------------------


def test_a_published_name_fails_before_the_model_is_built(cache, monkeypatch):
    def no_building(*args, **kwargs):
        raise AssertionError("the model was built before its weights were resolved")

    monkeypatch.setattr("convnext_tf.backbones.model.trunk", no_building)
    monkeypatch.setattr("convnext_tf.backbones.backbone.trunk", no_building)
    monkeypatch.setenv(catalogue.BASE_URL_ENV, "http://127.0.0.1:9")  # nobody listens on the discard port
    with pytest.raises(download.DownloadError, match="huge_22k_512_ema.pt"):
        create_model("convnextv2_huge", input_shape=(512, 512, 3), weights="imagenet_22k")
    with pytest.raises(download.DownloadError):
        ConvNeXtBackbone("huge", "v2", weights="imagenet_22k")
    with pytest.raises(ValueError, match="No checkpoint 'imagenet_22k' for convnext_atto"):
        create_model("convnext_atto", weights="imagenet_22k")
