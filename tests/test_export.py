"""Export to SavedModel, TFLite and ONNX: each format of each kind of model against the Keras model.

The exported files are run with their own runtimes (TensorFlow, LiteRT's interpreter, onnxruntime)
at 224x224 and at 375x500 (no multiple of 32), and compared here with the Keras model's outputs.
"""
import os
import sys

import keras
import numpy as np
import onnx
import onnxruntime
import pytest
import tensorflow as tf
import tf_keras
import torch
from ai_edge_litert.interpreter import Interpreter
from reference import TINY_DEPTHS, TINY_DIMS

from convnext_tf.backbones import ConvNeXtBackbone, ConvNeXtConfig, build_convnext, save_weights
from convnext_tf.backbones.model import preprocess_input
from convnext_tf.necks import ResizeLike, ops
from convnext_tf.tasks import cli, export, shapes
from convnext_tf.tasks.segmentation import build_segmentation_model

SIZES = ((224, 224), (375, 500))
FP32 = 1e-4  # max |exported - Keras| / max |Keras| for float32 formats
# quantized TFLite: (bound on that relative difference, bound on the share of changed argmax labels)
QUANTIZED = {"fp16": (5e-3, 0.01), "dynamic-int8": (0.1, 0.05), "int8": (0.6, 0.25)}  # random weights
FORMATS = [("savedmodel", None), ("tflite", None), ("onnx", None),
           ("tflite", "fp16"), ("tflite", "dynamic-int8"), ("tflite", "int8")]
EXTENSION = {"savedmodel": "", "tflite": ".tflite", "onnx": ".onnx"}


def build(kind: str) -> tf_keras.Model:
    """Each kind on a small custom ConvNeXt V2 (what an export does does not depend on the depths)."""
    tf_keras.utils.set_random_seed(0)
    if kind == "classifier":
        config = ConvNeXtConfig(depths=TINY_DEPTHS, dims=TINY_DIMS, version="v2")
        return build_convnext(config, input_shape=(None, None, 3), classes=10)
    backbone = ConvNeXtBackbone(version="v2", depths=TINY_DEPTHS, dims=TINY_DIMS)
    return backbone if kind == "backbone" else build_segmentation_model(backbone, 6, neck=kind, channels=64,
                                                                         aux_head=False)


@pytest.fixture(scope="module")
def models():
    return {kind: build(kind) for kind in ("classifier", "backbone", "fpn", "upernet")}


def images(size, batch=2, seed=1) -> np.ndarray:
    """Generated shapes on photos (real-looking inputs), normalised."""
    pixels = np.stack([tf.image.resize(s.image, size).numpy() for s in shapes.samples(batch, seed)])
    return preprocess_input(pixels).numpy()


def keras_outputs(model, x) -> dict:
    out = model(x, training=False)
    return {k: v.numpy() for k, v in out.items()} if isinstance(out, dict) else {"logits": out.numpy()}


def run_exported(path: str, fmt: str, x: np.ndarray) -> dict:
    """The exported model's outputs, by its own runtime."""
    if fmt == "savedmodel":
        serve = tf.saved_model.load(path).signatures["serving_default"]
        return {k: v.numpy() for k, v in serve(images=tf.constant(x)).items()}
    if fmt == "tflite":
        return dict(Interpreter(model_path=path).get_signature_runner()(images=x))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": x})))


def relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _cases():
    """Each kind in each format; the quantized TFLite formats of all but UperNet (the converter
    path UperNet's cases take) run in `make test-all` only."""
    for kind in ("classifier", "backbone", "fpn", "upernet"):
        for fmt, quantize in FORMATS:
            slow = quantize is not None and kind != "upernet"
            yield pytest.param(kind, fmt, quantize, marks=pytest.mark.slow if slow else (),
                               id=f"{kind}-{fmt}-{quantize}" if quantize else f"{kind}-{fmt}")


@pytest.mark.parametrize("kind,fmt,quantize", list(_cases()))
def test_export_runs_like_the_keras_model_at_two_sizes(kind, fmt, quantize, models, tmp_path):
    model = models[kind]
    path = str(tmp_path / f"{kind}{EXTENSION[fmt]}")
    config = export.ExportConfig(format=fmt, quantize=quantize, calibration_images=8, verify=False)
    export.export(model, path, config, log=None)
    outputs = ["2", "3", "4", "5"] if kind == "backbone" else ["logits"]
    if fmt == "tflite" and quantize is None:  # TFLite's builtin ops only, any input size
        interpreter = Interpreter(model_path=path)
        ops_used = {op["op_name"] for op in interpreter._get_ops_details()}
        assert "GELU" in ops_used and not any(o.startswith("Flex") or o == "CUSTOM" for o in ops_used), ops_used
        assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, -1, -1, 3]
    if fmt == "onnx":  # opset 17, dynamic batch, height and width
        proto = onnx.load(path)
        assert {o.domain: o.version for o in proto.opset_import}[""] == 17
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert [bool(d.dim_param) for d in dims] == [True, True, True, False] and dims[3].dim_value == 3
        assert [o.name for o in proto.graph.output] == outputs
    rel_bound, label_bound = QUANTIZED.get(quantize, (FP32, 0.0))
    for size in SIZES:
        x = images(size)
        want, got = keras_outputs(model, x), run_exported(path, fmt, x)
        assert sorted(got) == outputs
        for name in want:
            assert got[name].shape == want[name].shape, (name, size)
            assert relative(got[name], want[name]) <= rel_bound, (name, size, relative(got[name], want[name]))
        if kind in ("fpn", "upernet"):  # share of pixels whose label changes
            changed = np.mean(got["logits"].argmax(-1) != want["logits"].argmax(-1))
            assert changed <= label_bound, (size, changed)


def test_nearest_resize_is_pytorchs_at_odd_sizes():
    """ResizeLike('nearest') is `F.interpolate(mode='nearest')` (mmdet's FPN) at the sizes a 375x500
    image gives (46 -> 93 rows: where a resize op's tie rounding differs between runtimes)."""
    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in [((46, 62), (93, 125)), ((23, 31), (46, 62)), ((11, 15), (23, 31)), ((7, 5), (15, 16)),
                             ((93, 125), (46, 62))]:
        x = rng.standard_normal((1, h, w, 4)).astype(np.float32)
        want = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(oh, ow), mode="nearest")
        got = ResizeLike("nearest")([x, np.zeros((1, oh, ow, 1), np.float32)]).numpy()
        np.testing.assert_array_equal(got, want.numpy().transpose(0, 2, 3, 1))


def test_the_self_check_catches_a_resize_that_runtimes_round_differently(models, tmp_path, monkeypatch):
    """With TensorFlow's nearest resize op (tf_half_pixel_for_nn in ONNX) the FPN's ONNX export
    differs at 375x500; the export's verification refuses it and writes nothing."""
    monkeypatch.setattr(ops, "resize_nearest", lambda x, size: tf.image.resize(x, size, "nearest"))
    model = build("fpn")
    path = tmp_path / "fpn.onnx"
    with pytest.raises(export.ExportError, match=r"differs from the Keras model .* at 375x500 logits"):
        export.export(model, str(path), export.ExportConfig(format="onnx"), log=None)
    assert os.listdir(tmp_path) == []


def test_savedmodel_in_tf_servings_layout_with_preprocessing_loads_in_keras_3(models, tmp_path):
    model = models["fpn"]
    base = tmp_path / "serving" / "shapes_fpn"
    checks = export.export(model, str(base / "1"), export.ExportConfig(include_preprocessing=True), log=None)
    assert [(c.size, c.output) for c in checks] == [(s, "logits") for s in SIZES]
    assert max(c.max_rel for c in checks) <= FP32
    assert sorted(os.listdir(base / "1")) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    pixels = np.random.default_rng(0).integers(0, 256, (1, 193, 257, 3), dtype=np.uint8)
    want = model(preprocess_input(pixels), training=False).numpy()
    signature = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    assert signature.structured_input_signature[1]["images"].dtype == tf.uint8
    assert signature.structured_input_signature[1]["images"].shape.as_list() == [None, None, None, 3]
    layer = keras.layers.TFSMLayer(str(base / "1"), call_endpoint="serving_default")  # Keras 3
    assert relative(np.asarray(layer(pixels)["logits"]), want) <= FP32
    assert relative(export.Runner(str(base))(pixels)["logits"], want) <= FP32  # the highest version


def test_a_model_tflite_cannot_map_is_refused_with_a_message(tmp_path):
    inputs = tf_keras.Input((None, None, 3))
    outputs = tf_keras.layers.Lambda(lambda x: tf.linalg.svd(tf.reduce_mean(x, 0), compute_uv=False))(inputs)
    model = tf_keras.Model(inputs, outputs, name="svd")
    with pytest.raises(export.ExportError, match="TFLite cannot convert svd with its builtin ops"):
        export.export(model, str(tmp_path / "svd.tflite"), export.ExportConfig(format="tflite"), log=None)
    assert os.listdir(tmp_path) == []


def test_fixed_input_size(models, tmp_path):
    path = str(tmp_path / "classifier.onnx")
    checks = export.export(models["classifier"], path, export.ExportConfig(format="onnx", input_size=(193, 257)), log=None)
    assert [c.size for c in checks] == [(193, 257)]
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [193, 257, 3]


def test_export_command(models, tmp_path, capsys):
    models["classifier"].save(tmp_path / "classifier.keras")
    out_path = tmp_path / "classifier.tflite"
    cli.main(["export", str(tmp_path / "classifier.keras"), "--format", "tflite", "--quantize", "dynamic-int8",
              "--out", str(out_path)])
    out = capsys.readouterr().out
    assert "224x224 logits: max |diff|" in out and "375x500 logits: max |diff|" in out
    assert "input 'images' (N, H, W, 3) float32 normalised, outputs 'logits'" in out
    x = images((224, 224))
    got = run_exported(str(out_path), "tflite", x)["logits"]
    assert relative(got, models["classifier"](x).numpy()) <= QUANTIZED["dynamic-int8"][0]


def test_export_command_from_a_checkpoint_file(tmp_path, capsys):
    """A weights file with --model: the classifier with the file's head, or its backbone."""
    tf_keras.utils.set_random_seed(0)
    model = build_convnext("convnextv2_atto", input_shape=(None, None, 3), classes=10)
    save_weights(model, str(tmp_path / "atto.weights.h5"))
    cli.main(["export", str(tmp_path / "atto.weights.h5"), "--model", "convnextv2_atto", "--backbone",
              "--format", "savedmodel", "--input-size", "256", "320", "--out", str(tmp_path / "features")])
    assert "outputs '2', '3', '4', '5'" in capsys.readouterr().out
    cli.main(["export", str(tmp_path / "atto.weights.h5"), "--model", "convnextv2_atto", "--format", "savedmodel",
              "--out", str(tmp_path / "classifier")])
    x = images((193, 257))
    got = run_exported(str(tmp_path / "classifier"), "savedmodel", x)["logits"]
    assert got.shape == (2, 10) and relative(got, model(x).numpy()) <= FP32


def fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(a) for a in argv])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("convnext-tf: error: ") and err.count("\n") == 1, err
    return err


def test_export_errors(models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keras_file = tmp_path / "fixed.keras"
    build_convnext("convnext_atto", input_shape=(224, 224, 3), classes=3).save(keras_file)
    cases = [
        (["--format", "onnx", "--quantize", "int8", "--out", "m.onnx"], "--quantize int8 is for --format tflite"),
        (["--format", "tflite", "--out", "m.onnx"], "a tflite export is a file ending in .tflite"),
        (["--format", "tflite", "--input-size", "300", "300", "--out", "m.tflite"],
         "was built for 224x224 inputs only, not 300x300"),
        (["--format", "tflite", "--dynamic", "--out", "m.tflite"], "was built for 224x224 inputs only, not dynamic"),
        (["--format", "tflite", "--input-size", "16", "300", "--out", "m.tflite"], "input size must be an integer >= 32; got 16"),
        (["--format", "tflite", "--calibration", "x", "--out", "m.tflite"], "--calibration images are for --quantize int8"),
        (["--format", "savedmodel", "--model", "convnext_atto", "--out", "m"], "is a saved Keras model; --model"),
    ]
    for args, message in cases:
        assert message in fails(["export", keras_file, *args], capsys), args
    weights = tmp_path / "w.weights.h5"
    save_weights(models["classifier"], str(weights))
    assert "--model is needed with the weights" in fails(["export", weights, "--format", "onnx", "--out", "m.onnx"], capsys)
    assert "convnext_tiyn" in fails(["export", weights, "--model", "convnext_tiyn", "--format", "onnx", "--out", "m.onnx"],
                                    capsys)
    assert "no .jpg/.jpeg/.png/.bmp images" in fails(
        ["export", keras_file, "--format", "tflite", "--quantize", "int8", "--calibration", tmp_path / "empty_folder",
         "--out", tmp_path / "m.tflite"], capsys)
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # the [onnx] extra not installed
    assert "pip install 'convnext-tf[onnx]'" in fails(["export", keras_file, "--format", "onnx", "--out", tmp_path / "m.onnx"],
                                                      capsys)
    assert sorted(os.listdir(tmp_path)) == ["fixed.keras", "w.weights.h5"]  # nothing written


def test_resize_like_takes_bilinear_or_nearest_only():
    with pytest.raises(ValueError, match="ResizeLike method must be 'bilinear' or 'nearest'; got 'bicubic'"):
        ResizeLike("bicubic")


def test_a_non_finite_output_is_not_called_close(tmp_path):
    inputs = tf_keras.Input((None, None, 3))
    model = tf_keras.Model(inputs, tf_keras.layers.Lambda(lambda x: tf.math.log(x - 1e9))(inputs), name="nan")
    with pytest.raises(export.ExportError, match="'features' of the Keras model's at 224x224 has non-finite values"):
        export.export(model, str(tmp_path / "nan.onnx"), export.ExportConfig(format="onnx"), log=None)
    assert os.listdir(tmp_path) == []
