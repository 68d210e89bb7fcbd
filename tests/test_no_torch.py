"""Pretrained weights without PyTorch: .pth/.bin read with numpy, safetensors, the original port's .h5 files.

The files are written here by `torch.save`, `safetensors` and tf_keras; they are read in child
processes in which torch, transformers and the other test-only packages cannot be imported.
"""
import os
import pickle
import re
import subprocess
import sys
import tomllib
import zipfile

import h5py
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch
from reference import hf_classifier, hf_to_official, hf_to_timm
from safetensors.torch import save_file
from test_download import Server, official, torch_bytes

from convnext_tf.backbones import catalogue, download, read_checkpoint, torch_files
from convnext_tf.backbones.weights import CheckpointReadError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("torch", "transformers", "pytest", "timm", "torchvision")  # Pillow comes with Model Garden
# An import hook in the child: importing any of BLOCKED fails, as on a machine without them.
PRELUDE = f"""import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked in this test)")
sys.meta_path.insert(0, _Blocked())
"""
X = np.random.default_rng(0).standard_normal((2, 64, 96, 3)).astype(np.float32)


def run_without_torch(code: str, **env) -> subprocess.CompletedProcess:
    """Run `code` in a child process where importing torch and the test-only packages fails."""
    run = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True,
                         env=dict(os.environ, **env), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def reference_logits(ref) -> np.ndarray:
    with torch.no_grad():
        return ref(torch.from_numpy(X.transpose(0, 3, 1, 2))).logits.numpy()


def test_the_child_really_has_no_torch():
    for module in ("torch", "transformers", "safetensors.torch"):
        run = subprocess.run([sys.executable, "-c", PRELUDE + f"import {module}"], capture_output=True, text=True)
        assert run.returncode != 0 and "ModuleNotFoundError" in run.stderr, module


def test_arrays_equal_torch_load_for_every_dtype_and_layout(tmp_path):
    base = torch.randn(6, 5)
    state = {
        "float32": torch.randn(3, 4), "float16": torch.randn(3, 4).half(), "bfloat16": torch.randn(5, 2).bfloat16(),
        "transposed": base.t(), "strided": base[1:5, ::2], "shared_row": base[2], "scalar": torch.tensor(2.5),
        "int64": torch.arange(7), "bool": torch.tensor([True, False]), "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(torch.randn(4)),
    }
    torch.save({"model": state, "epoch": 3}, tmp_path / "all.pth")
    expected = torch.load(tmp_path / "all.pth", weights_only=True)["model"]
    run_without_torch(
        "import numpy as np\nfrom convnext_tf.backbones import read_checkpoint\n"
        f"np.savez({str(tmp_path / 'got.npz')!r}, **read_checkpoint({str(tmp_path / 'all.pth')!r}))\n"
    )
    got = np.load(tmp_path / "got.npz")
    assert sorted(got.files) == sorted(expected)
    for key, tensor in expected.items():
        tensor = tensor.detach()
        want = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        assert got[key].dtype == want.dtype and got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)


CASES = [("official", torch.float32), ("official", torch.float16), ("official", torch.bfloat16),
         ("timm", torch.float32), ("timm", torch.bfloat16), ("hf", torch.float32), ("hf", torch.float16)]


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
def test_checkpoints_load_without_torch(tmp_path, name):
    """Official, timm and Hugging Face files in float32, float16 and bfloat16, read in one child process."""
    files, expected = [], []
    for fmt, dtype in CASES:
        ref = hf_classifier(name, seed=4).to(dtype)
        sd = {"official": hf_to_official, "timm": lambda s: hf_to_timm(s, conv_mlp=True), "hf": dict}[fmt](ref.state_dict())
        files.append(str(tmp_path / f"{fmt}_{str(dtype)[6:]}.{'bin' if fmt == 'hf' else 'pth'}"))
        torch.save(sd, files[-1])
        expected.append(reference_logits(ref.float()))  # the same (rounded) weights, in float32
    np.save(tmp_path / "x.npy", X)
    run_without_torch(
        "import numpy as np\nfrom convnext_tf.backbones import create_model, load_weights\n"
        f"model = create_model({name!r}, input_shape=(None, None, 3))\nx = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"outs = []\nfor f in {files!r}:\n    load_weights(model, f)\n    outs.append(model(x).numpy())\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, np.stack(outs))\n"
    )
    for (fmt, dtype), got, want in zip(CASES, np.load(tmp_path / "logits.npy"), expected):
        assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want)), (fmt, dtype)


def test_legacy_non_zip_files_get_a_clear_error(tmp_path):
    torch.save({"a": torch.zeros(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointReadError, match=r"old\.pth .*legacy \(pre-1\.6, non-zip\) format"):
        read_checkpoint(tmp_path / "old.pth")


class Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("func,named", [(os.system, r"(posix|os)\.system"), (eval, r"(__builtin__|builtins)\.eval")])
def test_other_globals_are_refused_before_anything_runs(tmp_path, func, named):
    marker = tmp_path / "ran"
    payload = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:  # torch.save's layout, with a pickle torch never writes
        z.writestr("evil/data.pkl", pickle.dumps({"model": {"w": Evil(func, payload)}}, protocol=2))
        z.writestr("evil/version", "3\n")
    with pytest.raises(CheckpointReadError, match=f"names the global .*{named}.*refused before anything ran"):
        read_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match=named):
        torch_files.load(path)


def test_pretrained_name_falls_back_to_the_next_source_without_torch(tmp_path):
    ckpt = catalogue.find("convnext_tiny", "imagenet_1k", 224)
    assert ckpt.sources[0].path == "timm/convnext_tiny.fb_in1k/resolve/main/model.safetensors"
    assert official(ckpt).path == "convnext/convnext_tiny_1k_224_ema.pth"
    ref = hf_classifier("convnext_tiny", seed=9)
    srv = Server({official(ckpt).path: torch_bytes(hf_to_official(ref.state_dict()))})  # timm's file: 404
    np.save(tmp_path / "x.npy", X)
    try:
        run = run_without_torch(
            "import numpy as np\nfrom convnext_tf.backbones import convnext_tiny\n"
            "model = convnext_tiny(input_shape=(None, None, 3), weights='imagenet_1k')\n"
            f"np.save({str(tmp_path / 'logits.npy')!r}, model(np.load({str(tmp_path / 'x.npy')!r})).numpy())\n",
            **{catalogue.BASE_URL_ENV: srv.url, download.HOME_ENV: str(tmp_path / "cache")},
        )
    finally:
        srv.close()
    assert srv.requests == ["/" + ckpt.sources[0].path, "/" + official(ckpt).path]
    assert f"{srv.url}/{ckpt.sources[0].path} failed (HTTPError: HTTP Error 404" in run.stdout
    assert f"downloaded {srv.url}/{official(ckpt).path}" in run.stdout
    expected = reference_logits(ref)
    assert np.max(np.abs(np.load(tmp_path / "logits.npy") - expected)) <= 1e-4 * np.max(np.abs(expected))


# The original TensorFlow port (zibbini/convnext-v2_tensorflow): its nested models, rebuilt here with
# the same class names, attribute order and layer names, so that Keras' HDF5 writer lays the file out
# as that port's `save_weights` did.


class Stem(tf_keras.Model):
    def __init__(self, dim):
        super().__init__()
        self.conv = tf_keras.layers.Conv2D(dim, 4, strides=4, padding="same")
        self.norm = tf_keras.layers.LayerNormalization(epsilon=1e-6)

    def call(self, x):
        return self.norm(self.conv(x))


class DownSample(tf_keras.Model):
    def __init__(self, dim):
        super().__init__()
        self.norm = tf_keras.layers.LayerNormalization(epsilon=1e-6)
        self.conv = tf_keras.layers.Conv2D(dim, 2, strides=2, padding="same")

    def call(self, x):
        return self.conv(self.norm(x))


class PortScale(tf_keras.layers.Layer):
    def __init__(self, shape, name):
        super().__init__()
        self.gamma = tf.Variable(tf.zeros(shape), name=f"{name}/gamma")
        self.beta = tf.Variable(tf.zeros(shape), name=f"{name}/beta") if name == "GRN" else None

    def call(self, x):
        return x * self.gamma + (self.beta if self.beta is not None else 0)


class Block(tf_keras.Model):
    def __init__(self, dim, v2, **kwargs):
        super().__init__(**kwargs)
        self.dwconv = tf_keras.layers.DepthwiseConv2D(7, padding="same")
        self.norm = tf_keras.layers.LayerNormalization(epsilon=1e-6)
        self.pwconv1 = tf_keras.layers.Dense(4 * dim)
        self.act = tf_keras.layers.Activation("gelu")
        if v2:
            self.grn = PortScale((1, 1, 1, 4 * dim), "GRN")
        self.pwconv2 = tf_keras.layers.Dense(dim)
        if not v2:
            self.layer_scale = PortScale((dim,), "layer_scale")

    def call(self, x):
        return x + self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))


class Head(tf_keras.Model):
    def __init__(self, classes):
        super().__init__()
        self.avg_pool = tf_keras.layers.GlobalAveragePooling2D()
        self.norm = tf_keras.layers.LayerNormalization()
        self.predictions = tf_keras.layers.Dense(classes)

    def call(self, x):
        return self.predictions(self.norm(self.avg_pool(x)))


def port_file(name: str, path, seed: int = 6) -> torch.nn.Module:
    """Write the HF reference's weights in the original port's .h5 layout; returns the reference."""
    ref = hf_classifier(name, seed=seed)
    v2 = "v2" in name
    sd = {re.sub(r"^convnext(v2)?\.", "", k): v.numpy() for k, v in ref.state_dict().items()}
    depths, dims = ref.config.depths, ref.config.hidden_sizes
    tf_keras.backend.clear_session()  # the port's generated layer names count from here
    x = inputs = tf_keras.Input((224, 224, 3))
    values = {}
    for i in range(4):
        layer = Stem(dims[0]) if i == 0 else DownSample(dims[i])
        x = layer(x)
        if i == 0:
            values[layer] = [sd["embeddings.patch_embeddings.weight"].transpose(2, 3, 1, 0), sd["embeddings.patch_embeddings.bias"],
                             sd["embeddings.layernorm.weight"], sd["embeddings.layernorm.bias"]]
        else:
            p = f"encoder.stages.{i}.downsampling_layer."
            values[layer] = [sd[p + "0.weight"], sd[p + "0.bias"], sd[p + "1.weight"].transpose(2, 3, 1, 0), sd[p + "1.bias"]]
        for j in range(depths[i]):
            block = Block(dims[i], v2, name=f"block_{i}_{j}")
            x = block(x)
            p = f"encoder.stages.{i}.layers.{j}."
            w = [sd[p + "dwconv.weight"].transpose(2, 3, 0, 1), sd[p + "dwconv.bias"], sd[p + "layernorm.weight"],
                 sd[p + "layernorm.bias"], sd[p + "pwconv1.weight"].T, sd[p + "pwconv1.bias"]]
            w += [sd[p + "grn.weight"], sd[p + "grn.bias"]] if v2 else []
            w += [sd[p + "pwconv2.weight"].T, sd[p + "pwconv2.bias"]]
            w += [] if v2 else [sd[p + "layer_scale_parameter"]]
            values[block] = w
    head = Head(1000)
    model = tf_keras.Model(inputs, head(x))
    values[head] = [sd["layernorm.weight"], sd["layernorm.bias"], sd["classifier.weight"].T, sd["classifier.bias"]]
    for layer, arrays in values.items():
        layer.set_weights([a.reshape(v.shape) for a, v in zip(arrays, layer.get_weights())])
    model.save_weights(str(path))
    return ref


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
def test_original_port_h5_files_load_without_torch(tmp_path, name):
    ref = port_file(name, tmp_path / f"{name}_1k_224.h5")

    with h5py.File(tmp_path / f"{name}_1k_224.h5") as f:  # the port's layout, as its users hold it
        layers = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        assert layers[1:4] == ["stem", "block_0_0", "block_0_1"] and "down_sample_2" in layers and layers[-1] == "head"
    np.save(tmp_path / "x.npy", X)
    run_without_torch(
        "import numpy as np\nfrom convnext_tf import backbones\n"
        f"model = backbones.create_model({name!r}, input_shape=(None, None, 3), weights={str(tmp_path / f'{name}_1k_224.h5')!r})\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, model(np.load({str(tmp_path / 'x.npy')!r})).numpy())\n"
    )
    expected = reference_logits(ref)
    assert np.max(np.abs(np.load(tmp_path / "logits.npy") - expected)) <= 1e-4 * np.max(np.abs(expected))


def test_pth_safetensors_and_port_h5_in_one_process_without_test_packages(tmp_path):
    sd = hf_classifier("convnext_atto", seed=1).state_dict()
    torch.save(hf_to_official(sd), tmp_path / "a.pth")
    save_file(hf_to_timm(sd, conv_mlp=True), tmp_path / "a.safetensors")
    port_file("convnext_atto", tmp_path / "a.h5", seed=1)
    np.save(tmp_path / "x.npy", X)
    files = tuple(str(tmp_path / f) for f in ("a.pth", "a.safetensors", "a.h5"))
    run_without_torch(
        "import numpy as np\nfrom convnext_tf.backbones import convnext_atto\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"outs = [convnext_atto(input_shape=(None, None, 3), weights=f)(x).numpy() for f in {files!r}]\n"
        f"np.save({str(tmp_path / 'outs.npy')!r}, np.stack(outs))\n"
    )
    outs = np.load(tmp_path / "outs.npy")
    np.testing.assert_array_equal(outs[0], outs[1])  # the same float32 values, from three formats
    np.testing.assert_array_equal(outs[0], outs[2])
    deps = tomllib.loads(open(os.path.join(ROOT, "pyproject.toml")).read())["project"]["dependencies"]
    assert "safetensors" in deps and not any(d.startswith(("torch", "transformers")) for d in deps)


def test_convert_command_without_torch(tmp_path):
    torch.save(hf_to_official(hf_classifier("convnextv2_atto", seed=2).state_dict()), tmp_path / "v2.pt")
    code = "from convnext_tf.tasks.cli import main\nmain(%r)\n"
    argv = ["convert", str(tmp_path / "v2.pt"), "--model", "convnextv2_atto", "--out", str(tmp_path / "v2.weights.h5")]
    run = run_without_torch(code % argv)
    assert "head of 1000 classes" in run.stdout and (tmp_path / "v2.weights.h5").exists()
    with h5py.File(tmp_path / "v2.weights.h5") as f:
        assert "stages.3.blocks.1.grn" in [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
    verify = subprocess.run([sys.executable, "-c", PRELUDE + code % (argv + ["--verify"])], capture_output=True, text=True)
    assert verify.returncode == 1 and "Traceback" not in verify.stderr
    assert "--verify runs the PyTorch reference: pip install 'convnext-tf[convert]'" in verify.stderr
