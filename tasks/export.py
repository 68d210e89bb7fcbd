"""Export a model to a SavedModel, TFLite or ONNX, and check the export against the Keras model.

    convnext-tf export MODEL --format savedmodel|tflite|onnx [--quantize fp16|dynamic-int8|int8] --out PATH

The exported model takes a batch of images `images` (N, H, W, 3): float32 normalised as
`preprocess_input` does, or uint8 RGB with `include_preprocessing`. By default batch, H and W are
dynamic. Outputs are named by meaning: `logits` (a classifier or a segmentation model, the latter
at the input size), the levels `'2'`..`'5'` of a backbone or a neck, `features` otherwise.
Every export runs itself and the Keras model on one random batch at two sizes (one not a multiple
of 32) before it is moved into place; a float32 export that differs by more than `TOLERANCE` of
the largest output is an error and nothing is written.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import warnings
from typing import Callable, Iterator

import cv2
import numpy as np
import tensorflow as tf
import tf_keras
from ai_edge_litert.interpreter import Interpreter

from convnext_tf.backbones import CheckpointError, ConvNeXtBackbone, ConvNeXtConfig, arguments, read_checkpoint
from convnext_tf.backbones.config import MIN_INPUT_SIZE
from convnext_tf.backbones.files import atomic_folder, atomic_path
from convnext_tf.backbones.model import preprocess_input, resolve_weights
from convnext_tf.necks import NECKS

from . import predict, shapes
from .segmentation import SegmentationModel
from .visualize import read_rgb

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("fp16", "dynamic-int8", "int8")  # TFLite only
EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx"}
VERIFY_SIZES = ((224, 224), (375, 500))  # (H, W) of the self-check; 375x500 is no multiple of 32
TOLERANCE = 1e-4  # float32 formats: max |exported - Keras| / max |Keras| of each output
INPUT_NAME = "images"
ONNX_EXTRA = "pip install 'convnext-tf[onnx]'"
IMAGE_FILES = (".jpg", ".jpeg", ".png", ".bmp")


class ExportError(ValueError):
    """An export that cannot be made, or that does not compute what the Keras model computes."""


@dataclasses.dataclass
class ExportConfig:
    """How to export.

    format: 'savedmodel' (a folder), 'tflite' or 'onnx' (a file).
    quantize: TFLite only: 'fp16' (float16 weights), 'dynamic-int8' (int8 weights, float
      activations), 'int8' (weights and activations, calibrated on `calibration_images`).
    input_size: (H, W) for a fixed-size export; None: the model's own (dynamic H and W unless
      the model was built for one size).
    dynamic: insist on dynamic H and W (an error for a model built for one size).
    include_preprocessing: take uint8 RGB images and apply `preprocess_input` inside.
    opset: ONNX opset.
    calibration: 'int8': a folder of images to calibrate on; None: generated `shapes` images.
    calibration_images: how many calibration images.
    verify: run the export against the Keras model before writing it.
    """

    format: str = "savedmodel"
    quantize: str | None = None
    input_size: tuple[int, int] | None = None
    dynamic: bool = False
    include_preprocessing: bool = False
    opset: int = 17
    calibration: str | None = None
    calibration_images: int = 32
    verify: bool = True

    def __post_init__(self):
        arguments.choice("format", self.format, FORMATS)
        arguments.choice("quantize", self.quantize, (None, *QUANTIZATIONS))
        if self.quantize and self.format != "tflite":
            raise ExportError(f"--quantize {self.quantize} is for --format tflite; {self.format} exports float32.")
        if self.input_size is not None:
            self.input_size = tuple(arguments.integer("input size", s, lo=MIN_INPUT_SIZE) for s in self.input_size)
            if len(self.input_size) != 2:
                raise ExportError(f"input_size is (height, width); got {self.input_size}.")
            if self.dynamic:
                raise ExportError("Give either an input size or dynamic=True (--dynamic), not both.")
        self.opset = arguments.integer("opset", self.opset, lo=13)
        self.calibration_images = arguments.integer("calibration_images", self.calibration_images, lo=1)
        if self.calibration is not None and self.quantize != "int8":
            raise ExportError("--calibration images are for --quantize int8 only.")


@dataclasses.dataclass
class Check:
    """How far one output of the export is from the Keras model's at one input size."""

    size: tuple[int, int]
    output: str
    max_abs: float
    max_rel: float  # max_abs / max |Keras output|
    changed: float | None = None  # share of argmax labels (pixels or images) that differ

    def __str__(self) -> str:
        text = f"{self.size[0]}x{self.size[1]} {self.output}: max |diff| {self.max_abs:.2e} ({self.max_rel:.2e} of the largest)"
        return text + (f", argmax differs for {self.changed:.2%}" if self.changed is not None else "")


def input_size(model: tf_keras.Model, config: ExportConfig) -> tuple[int, int] | None:
    """The export's (H, W), None for dynamic: the config's, else the model's own."""
    shape = tf.TensorShape(model.input_shape)
    if shape.rank != 4 or shape[-1] != 3:
        raise ExportError(f"{model.name} takes inputs of shape {shape}; the export is for image batches (N, H, W, 3).")
    own = None if shape[1] is None or shape[2] is None else (shape[1], shape[2])
    if own and (config.dynamic or (config.input_size and config.input_size != own)):
        asked = "dynamic sizes" if config.dynamic else f"{config.input_size[0]}x{config.input_size[1]}"
        raise ExportError(f"{model.name} was built for {own[0]}x{own[1]} inputs only, not {asked}; "
                          "build it with input_shape=(None, None, 3) for other sizes.")
    return config.input_size or own


def output_names(model: tf_keras.Model) -> list[str]:
    """The names the export gives the model's outputs (see the module's docstring)."""
    if isinstance(model.output, dict):
        return sorted(model.output, key=lambda k: (len(k), k))
    last = model.layers[-1] if model.layers else None
    if isinstance(model, SegmentationModel) or isinstance(last, tf_keras.layers.Dense):
        return ["logits"]
    if isinstance(last, tf_keras.layers.Activation):
        return ["probabilities"]
    return ["features"]


def load_model(src: str, name: str | None = None, backbone: bool = False, resolution: int | None = None) -> tf_keras.Model:
    """The model to export.

    `src` is a saved Keras model (a `.keras` file or SavedModel folder, used as it is), or weights
    (a published name such as 'imagenet_1k', or a checkpoint file) for `name`: '<neck>_<variant>'
    ('upernet_convnext_tiny') is a segmentation model, a variant ('convnext_tiny') the classifier
    with the checkpoint's head (none for a headless one), or its `ConvNeXtBackbone` with `backbone`.
    `resolution` picks a published checkpoint's (224, 384).
    """
    if predict.is_keras_file(src):
        if name or backbone:
            raise ExportError(f"{src!r} is a saved Keras model; --model and --backbone are for weights files and names.")
        if not os.path.exists(src):
            raise FileNotFoundError(f"No saved model {src!r}.")
        return tf_keras.models.load_model(src)
    if not name:
        raise ExportError(f"--model is needed with the weights {src!r}: a variant such as convnext_tiny, or "
                          f"<neck>_<variant> ({' or '.join(sorted(NECKS))}) for a segmentation model.")
    if name.partition("_")[0] in NECKS:
        if backbone:
            raise ExportError(f"--backbone exports a variant's ConvNeXtBackbone; {name!r} is a segmentation model.")
        return predict.segmentation_model(name, src)
    ConvNeXtConfig.from_name(name)  # names the known variants if this is none
    if backbone:
        return ConvNeXtBackbone(name, weights=resolve_weights(src, name, resolution))
    path = resolve_weights(src, name, resolution)
    try:
        return predict.classifier_model(name, read_checkpoint(path))[0]
    except CheckpointError as e:
        raise type(e)(f"{path}: {e}") from e


def serving_function(model: tf_keras.Model, config: ExportConfig) -> tf.types.experimental.GenericFunction:
    """`images -> {name: float32 output}` with the export's input signature."""
    names = output_names(model)
    height, width = input_size(model, config) or (None, None)
    dtype = tf.uint8 if config.include_preprocessing else tf.float32

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], dtype, name=INPUT_NAME)])
    def serve(images):
        return keras_outputs(model, images, config.include_preprocessing, names)

    return serve


def keras_outputs(model: tf_keras.Model, images, include_preprocessing: bool, names: list[str] | None = None) -> dict:
    """The model's outputs on `images` (uint8 pixels with `include_preprocessing`), named as exported."""
    x = preprocess_input(images) if include_preprocessing else images
    out = model(x, training=False)
    outputs = out if isinstance(out, dict) else {(names or output_names(model))[0]: out}
    return {str(k): tf.cast(v, tf.float32) for k, v in outputs.items()}


def _calibration(config: ExportConfig, size: tuple[int, int] | None) -> Callable[[], Iterator[dict]]:
    """TFLite's representative dataset: images resized to the export's size (224x224 if dynamic)."""
    height, width = size or (224, 224)
    if config.calibration:
        paths = sorted(p for p in glob.glob(os.path.join(glob.escape(config.calibration), "*"))
                       if p.lower().endswith(IMAGE_FILES))[: config.calibration_images]
        if not paths:
            raise ExportError(f"--calibration {config.calibration!r}: no {'/'.join(IMAGE_FILES)} images in this folder.")
        images = [read_rgb(p) for p in paths]
    else:
        images = [s.image for s in shapes.samples(config.calibration_images, seed=0)]

    def batches():
        for image in images:
            x = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)[None]
            yield {INPUT_NAME: x if config.include_preprocessing else preprocess_input(x).numpy()}

    return batches


def to_tflite(model: tf_keras.Model, serve, config: ExportConfig) -> bytes:
    """The TFLite flatbuffer, TFLite's builtin ops only (no Select TF ops)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if config.quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if config.quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif config.quantize == "int8":
        converter.representative_dataset = _calibration(config, input_size(model, config))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with warnings.catch_warnings():  # int8 calibration runs TensorFlow's deprecated interpreter
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return converter.convert()
    except Exception as e:  # the converter's ConverterError lists the ops it could not map
        raise ExportError(
            f"TFLite cannot convert {model.name} with its builtin ops{' in int8' if config.quantize == 'int8' else ''} "
            f"(Select TF ops are not used): {str(e).strip().splitlines()[-1][:500]}"
        ) from e


def to_onnx(serve, config: ExportConfig, path: str) -> None:
    """Write the ONNX model (tf2onnx, dynamic batch/H/W unless the input size is fixed)."""
    try:
        import tf2onnx
    except ImportError as e:
        raise ImportError(f"ONNX export needs tf2onnx and onnxruntime: {ONNX_EXTRA} ({e}).") from e
    try:
        tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=config.opset, output_path=path)
    except Exception as e:  # tf2onnx raises several kinds, naming the op it could not map
        raise ExportError(f"tf2onnx cannot convert the model at opset {config.opset}: "
                          f"{str(e).strip().splitlines()[-1][:500]}") from e


class Runner:
    """An exported model to run: `Runner(path)(images) -> {output name: array}`.

    `path` is a `.tflite` or `.onnx` file, a SavedModel folder, or TF Serving's base folder of
    numbered versions (the highest is loaded, as TF Serving does).
    """

    def __init__(self, path: str):
        self.path = path
        if path.endswith(".tflite"):
            self.format = "tflite"
            self._run = Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner()
        elif path.endswith(".onnx"):
            self.format = "onnx"
            try:
                import onnxruntime
            except ImportError as e:
                raise ImportError(f"Running an ONNX model needs onnxruntime: {ONNX_EXTRA} ({e}).") from e
            self._session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        else:
            self.format = "savedmodel"
            self.path = _saved_model_folder(path)
            self._loaded = tf.saved_model.load(self.path)
            self._run = self._loaded.signatures["serving_default"]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self.format == "onnx":
            names = [o.name for o in self._session.get_outputs()]
            return dict(zip(names, self._session.run(names, {INPUT_NAME: images})))
        if self.format == "tflite":
            return dict(self._run(**{INPUT_NAME: images}))
        return {k: v.numpy() for k, v in self._run(**{INPUT_NAME: tf.constant(images)}).items()}


def _saved_model_folder(path: str) -> str:
    """`path` if it holds a SavedModel, else its highest numbered version folder (TF Serving's layout)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [d for d in os.listdir(path) if d.isdigit()] if os.path.isdir(path) else []
    if not versions:
        raise ExportError(f"{path!r} is neither a .tflite/.onnx file nor a SavedModel folder (no saved_model.pb), "
                          "nor a folder of numbered SavedModel versions.")
    return _saved_model_folder(os.path.join(path, max(versions, key=int)))


def sample_batch(size: tuple[int, int], include_preprocessing: bool, batch: int = 2, seed: int = 0) -> np.ndarray:
    """A random batch of the export's input type: uint8 pixels, or normalised float32 images."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8)
    return pixels if include_preprocessing else preprocess_input(pixels).numpy()


def compare(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], size: tuple[int, int]) -> list[Check]:
    """A `Check` per output; argmax changes for `logits`."""
    if sorted(expected) != sorted(got):
        raise ExportError(f"The export's outputs are {sorted(got)}; the Keras model's are {sorted(expected)}.")
    checks = []
    for name, want in expected.items():
        have = np.asarray(got[name], np.float32)
        if have.shape != want.shape:
            raise ExportError(f"Output {name!r} of the export has the shape {have.shape}; the Keras model's {want.shape}.")
        for what, values in (("the Keras model's", want), ("the export's", have)):
            if not np.all(np.isfinite(values)):
                raise ExportError(f"Output {name!r} of {what} at {size[0]}x{size[1]} has non-finite values: "
                                  "nothing to compare.")
        diff = float(np.max(np.abs(have - want)))
        changed = float(np.mean(have.argmax(-1) != want.argmax(-1))) if name == "logits" else None
        checks.append(Check(size, name, diff, diff / max(float(np.max(np.abs(want))), 1e-12), changed))
    return checks


def verify(model: tf_keras.Model, runner: Runner, config: ExportConfig) -> list[Check]:
    """Run the export and the Keras model (called eagerly) on one random batch per size."""
    fixed = input_size(model, config)
    checks = []
    for size in [fixed] if fixed else VERIFY_SIZES:
        x = sample_batch(size, config.include_preprocessing)
        expected = {k: v.numpy() for k, v in keras_outputs(model, x, config.include_preprocessing).items()}
        checks += compare(expected, runner(x), size)
    return checks


def export(model: tf_keras.Model, path: str, config: ExportConfig | None = None,
           log: Callable[[str], None] | None = print) -> list[Check]:
    """Export `model` to `path` (a folder for a SavedModel, else a file); return the verification checks.

    Written atomically: the export goes to a temporary path, is verified, then renamed. `log`
    receives a line per step.
    """
    config = config or ExportConfig()
    log = log or (lambda line: None)
    path = os.fspath(path)
    extension = EXTENSIONS.get(config.format)
    if extension and not path.endswith(extension):
        raise ExportError(f"--out {path!r}: a {config.format} export is a file ending in {extension}.")
    if not extension and os.path.isfile(path):
        raise ExportError(f"--out {path!r} is a file; a SavedModel is a folder.")
    serve = serving_function(model, config)
    what = f"{config.format}{' ' + config.quantize if config.quantize else ''}"
    if config.quantize == "int8":
        what += f", calibrated on {config.calibration_images} {config.calibration or 'generated'} images"
    log(f"exporting {model.name} ({what})")
    checks: list[Check] = []
    if config.format == "savedmodel":
        with atomic_folder(path) as tmp:
            tf.saved_model.save(model, tmp, signatures={"serving_default": serve.get_concrete_function()})
            checks = _verified(model, tmp, config, log)
        return checks
    with atomic_path(path, extension) as tmp:
        if config.format == "tflite":
            with open(tmp, "wb") as f:
                f.write(to_tflite(model, serve, config))
        else:
            to_onnx(serve, config, tmp)
        checks = _verified(model, tmp, config, log)
    return checks


def _verified(model, path: str, config: ExportConfig, log: Callable[[str], None]) -> list[Check]:
    if not config.verify:
        return []
    size = input_size(model, config)
    sizes = [size] if size else VERIFY_SIZES
    log(f"verifying against the Keras model at {', '.join(f'{h}x{w}' for h, w in sizes)} (H x W)")
    checks = verify(model, Runner(path), config)
    worst = max(checks, key=lambda c: c.max_rel)
    if not config.quantize and worst.max_rel > TOLERANCE:
        raise ExportError(f"The {config.format} export differs from the Keras model by more than {TOLERANCE:g} of the "
                          f"largest output at {worst}; nothing written.")
    return checks
