"""The structure: one-way imports, one name for a variant, the top-level package (editable and as a
wheel), custom architectures, and the export of our weights under Hugging Face's names."""
import ast
import glob
import importlib.metadata
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
import tf_keras
import torch
from reference import randomize, to_nhwc
from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextV2Config, ConvNextV2ForImageClassification

import convnext_tf
from convnext_tf.backbones import (
    ConvNeXtBackbone, ConvNeXtConfig, build_convnext, convnext_tiny, create_model, export_state_dict, load_state_dict,
)
from convnext_tf.backbones.model_garden import Backbone, ConvNeXt
from convnext_tf.tasks.segmentation import build_segmentation_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# backbones/ from the bottom up: each module may import only those before it
LAYERS = ["arguments", "files", "config", "layers", "winograd", "inference", "torch_files", "weights", "catalogue", "download", "model",
          "convnext_v1", "convnext_v2", "backbone", "model_garden"]
OPTIONAL = {"torch", "transformers", "tf2onnx", "onnxruntime"}  # imported inside functions only where a feature needs them (extras)


def imports(path):
    """(module imported, is it at module level) for every import of a file."""
    tree = ast.parse(open(path).read())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            names = [f"{base}.{a.name}" if node.level and not node.module else base for a in node.names]
            found += [(n, id(node) in top) for n in names]
    return found


def test_backbone_modules_import_only_below_themselves():
    for i, name in enumerate(LAYERS):
        for module, top in imports(os.path.join(ROOT, "backbones", f"{name}.py")):
            if not top:
                assert module.split(".")[0] in OPTIONAL, f"{name}.py imports {module} inside a function"
            if module.startswith("convnext_tf."):
                assert module.startswith("convnext_tf.backbones"), f"backbones/{name}.py reaches up to {module}"
                module = "." + module[len("convnext_tf.backbones"):].lstrip(".")
            if module.startswith("."):
                target = module.lstrip(".").split(".")[0]
                assert target in LAYERS[:i], f"backbones/{name}.py imports {target}, which is not below it"
    assert sorted(LAYERS) == sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "backbones", "*.py"))
                                    if not p.endswith("__init__.py"))


def test_no_function_level_imports_anywhere_but_optional_ones():
    for path in glob.glob(os.path.join(ROOT, "*", "*.py")) + [os.path.join(ROOT, "__init__.py")]:
        if os.sep + "tests" + os.sep in path or os.sep + "bench" + os.sep in path:
            continue
        for module, top in imports(path):
            assert top or module.split(".")[0] in OPTIONAL, f"{path} imports {module} inside a function"
        for module, _ in imports(path):
            if path.startswith(os.path.join(ROOT, "necks")):
                assert not module.startswith("convnext_tf.tasks"), f"{path} reaches up to {module}"


def test_one_name_for_a_variant_everywhere():
    by_name = ConvNeXtBackbone("convnextv2_atto")
    by_pair = ConvNeXtBackbone("atto", "v2")
    assert by_name.convnext_config == by_pair.convnext_config and by_name.name == "convnextv2_atto"
    assert ConvNeXtBackbone(model_id="convnext_tiny", version="v1").convnext_config.model_id == "tiny"
    with pytest.raises(ValueError, match="'convnextv2_atto' is a ConvNeXt v2 variant, but version is 'v1'"):
        ConvNeXtBackbone("convnextv2_atto", version="v1")
    seg = build_segmentation_model("convnextv2_atto", 3, channels=8)
    assert seg.backbone.convnext_config == by_name.convnext_config
    from official.vision.modeling.backbones import factory

    config = Backbone(type="convnext", convnext=ConvNeXt(model_id="convnextv2_atto"))
    built = factory.build_backbone(tf_keras.layers.InputSpec(shape=[None, None, None, 3]), config, None)
    assert built.convnext_config == by_name.convnext_config


def test_top_level_package():
    assert convnext_tf.__version__ == importlib.metadata.version("convnext-tf")
    from convnext_tf import ConvNeXtBackbone as top, build_segmentation_model as seg, convnext_v1, convnext_v2

    assert top is ConvNeXtBackbone and seg is build_segmentation_model
    assert convnext_v1.convnext_tiny is convnext_tiny and callable(convnext_v2.convnextv2_huge)
    import convnext_tf.tasks as tasks

    for name in tasks.__all__:
        assert getattr(tasks, name) is not None
    assert {"MeanIoU", "predict_sliding", "overlay"} <= set(tasks.__all__)


def test_builders_show_their_arguments():
    params = inspect.signature(convnext_tiny).parameters
    assert list(params)[:3] == ["input_shape", "input_tensor", "include_top"] and "weights" in params
    assert "depths (3, 3, 9, 3), widths (96, 192, 384, 768)" in convnext_tiny.__doc__
    assert "classes: number of classes" in convnext_tiny.__doc__


def test_the_wheel_installs_and_imports(tmp_path):
    """The regular (non-editable) wheel holds the package, importable on its own."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", ROOT,
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True)
    (wheel,) = glob.glob(str(tmp_path / "wheel" / "*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"), wheel],
                   check=True, capture_output=True)
    code = ("import convnext_tf, convnext_tf.tasks.cli\nfrom convnext_tf import convnext_v1\n"
            "m = convnext_v1.convnext_atto(input_shape=(64, 64, 3))\nprint(convnext_tf.__file__, m.output_shape)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                         env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[0] == str(tmp_path / "site" / "convnext_tf" / "__init__.py")
    assert "(None, 1000)" in run.stdout


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_custom_architecture_matches_hugging_face(version):
    depths, dims = (1, 1, 2, 1), (8, 16, 24, 32)
    hf = (ConvNextV2Config if version == "v2" else ConvNextConfig)(
        depths=list(depths), hidden_sizes=list(dims), layer_norm_eps=1e-6, num_labels=7)
    ref = randomize((ConvNextV2ForImageClassification if version == "v2" else ConvNextForImageClassification)(hf)).eval()
    cfg = ConvNeXtConfig(depths, dims, version)
    model = build_convnext(cfg, input_shape=(None, None, 3), classes=7)
    load_state_dict(model, ref.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 64, 80, 3)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy()
    assert np.max(np.abs(model(x).numpy() - expected)) <= 1e-4 * np.max(np.abs(expected))
    backbone = ConvNeXtBackbone(depths=depths, dims=dims, version=version, output_norm=False)
    load_state_dict(backbone, ref.state_dict())
    with torch.no_grad():
        maps = ref.convnext(torch.from_numpy(x.transpose(0, 3, 1, 2)), output_hidden_states=True).hidden_states \
            if version == "v1" else ref.convnextv2(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                                  output_hidden_states=True).hidden_states
    for level, ref_map in zip("2345", maps[1:]):
        np.testing.assert_allclose(backbone(x)[level].numpy(), to_nhwc(ref_map), rtol=1e-4, atol=1e-4)
    again = ConvNeXtBackbone.from_config(backbone.get_config())
    assert again.convnext_config == backbone.convnext_config
    from official.vision.modeling.backbones import factory

    config = Backbone(type="convnext", convnext=ConvNeXt(version=version, depths=list(depths), dims=list(dims)))
    built = factory.build_backbone(tf_keras.layers.InputSpec(shape=[None, None, None, 3]), config, None)
    assert built.convnext_config.depths == depths and built.convnext_config.dims == dims


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
def test_export_round_trip(name):
    model = create_model(name, input_shape=(None, None, 3), classes=5)
    rng = np.random.default_rng(1)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.1 for w in model.get_weights()])
    exported = export_state_dict(model, "hf")
    cfg = ConvNeXtConfig.from_name(name)
    hf = (ConvNextV2Config if cfg.version == "v2" else ConvNextConfig)(
        depths=list(cfg.depths), hidden_sizes=list(cfg.dims), layer_norm_eps=1e-6, num_labels=5)
    ref = (ConvNextV2ForImageClassification if cfg.version == "v2" else ConvNextForImageClassification)(hf).eval()
    ref.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in exported.items()}, strict=True)
    x = rng.standard_normal((1, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy()
    assert np.max(np.abs(model(x).numpy() - expected)) <= 1e-4 * np.max(np.abs(expected))
    again = create_model(name, input_shape=(None, None, 3), classes=5)
    load_state_dict(again, exported)
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"format must be one of \['hf'\]"):
        export_state_dict(model, "onnx")


def test_plain_keras_use_does_not_import_model_garden():
    """Model Garden (and its import time) comes with `convnext_tf.tasks.registry_imports` only."""
    code = (
        "import sys, convnext_tf, convnext_tf.backbones, convnext_tf.necks, convnext_tf.tasks\n"
        "convnext_tf.create_model('convnext_atto')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'official'))\n"
        "import convnext_tf.tasks.registry_imports\n"
        "from official.core import exp_factory\n"
        "print(exp_factory.get_exp_config('convnext_seg_fpn').task.model.decoder.type)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "exact_fpn"]


@pytest.mark.parametrize("legacy", ["1", "0"])
def test_tf_use_legacy_keras_makes_tf_keras_take_our_models_and_spares_keras_3(legacy):
    """With TF_USE_LEGACY_KERAS=1 (the Makefile's default) TensorFlow routes `tf.keras` to tf_keras,
    so `tf.keras` layers take a backbone's outputs, and its import leaves Keras 3 out; with 0 it
    imports Keras 3 (and what Keras 3 imports) and `tf.keras` layers refuse our tensors."""
    code = (
        "import sys, tensorflow as tf, convnext_tf\n"
        "print(sorted(m for m in ('keras', 'sklearn', 'matplotlib') if m in sys.modules))\n"
        "backbone = convnext_tf.ConvNeXtBackbone('atto')\n"
        "images = tf.keras.Input((64, 48, 3))\n"
        "try:\n"
        "    print(tf.keras.Model(images, tf.keras.layers.GlobalAveragePooling2D()(backbone(images)['5'])).output_shape)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, TF_USE_LEGACY_KERAS=legacy))
    assert run.returncode == 0, run.stderr[-3000:]
    imported, built = run.stdout.strip().splitlines()[-2:]
    if legacy == "1":
        assert (imported, built) == ("[]", "(None, 320)")  # atto's last stage: 320 channels
    else:
        assert "'keras'" in imported and built == "ValueError"  # "A KerasTensor cannot be used as input to ..."
