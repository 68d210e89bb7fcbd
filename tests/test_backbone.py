"""ConvNeXtBackbone: levels, shapes for any input, parity with HF ConvNextBackbone, freezing."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch
from reference import hf_classifier, hf_config, randomize, to_nhwc
from transformers import ConvNextBackbone, ConvNextV2Backbone

from convnext_tf.backbones import ConvNeXtBackbone, load_state_dict

LEVELS = ["2", "3", "4", "5"]


def floor_sizes(h, w):
    """PyTorch's output sizes of the valid 4/4 stem and 2/2 downsamples."""
    out = []
    for k in (4, 2, 2, 2):
        h, w = (h - k) // k + 1, (w - k) // k + 1
        out.append((h, w))
    return out


def hf_backbone(name, seed=0):
    config = hf_config(name, out_features=["stage1", "stage2", "stage3", "stage4"])
    cls = ConvNextV2Backbone if config.model_type == "convnextv2" else ConvNextBackbone
    return randomize(cls(config), seed).eval()


@pytest.mark.parametrize("model_id,version", [("atto", "v1"), ("atto", "v2"), ("tiny", "v1"), ("tiny", "v2")])
def test_parity_with_hf_backbone(model_id, version):
    name = f"convnext{'' if version == 'v1' else 'v2'}_{model_id}"
    ref = hf_backbone(name)
    backbone = ConvNeXtBackbone(model_id=model_id, version=version)
    result = load_state_dict(backbone, ref.state_dict())
    assert not result.missing and not result.unexpected and not result.skipped
    rng = np.random.default_rng(0)
    for h, w in ((224, 224), (375, 500)):
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            maps = ref(torch.from_numpy(x)).feature_maps
        ours = backbone(x.transpose(0, 2, 3, 1), training=False)
        assert list(ours) == LEVELS
        for level, expected in zip(LEVELS, maps):
            expected = to_nhwc(expected)
            got = ours[level].numpy()
            assert got.shape == expected.shape
            err = np.max(np.abs(got - expected))
            assert err <= 1e-4 * np.max(np.abs(expected)), f"{name} {h}x{w} level {level}: {err}"


def test_any_input_size_in_one_model():
    backbone = ConvNeXtBackbone(model_id="atto")
    dims = (40, 80, 160, 320)
    for h, w in ((375, 500), (32, 32), (333, 517), (1024, 1536)):
        out = backbone(np.zeros((1, h, w, 3), np.float32))
        assert [tuple(out[l].shape) for l in LEVELS] == [(1, fh, fw, c) for (fh, fw), c in zip(floor_sizes(h, w), dims)]
    assert floor_sizes(500, 375) == [(125, 93), (62, 46), (31, 23), (15, 11)]
    assert {k: v.as_list() for k, v in backbone.output_specs.items()} == {
        l: [None, None, None, c] for l, c in zip(LEVELS, dims)
    }
    assert backbone.feature_info == [
        {"level": 2 + i, "stride": 4 * 2**i, "num_chs": c} for i, c in enumerate(dims)
    ]


def test_levels_and_raw_outputs_match_classifier_checkpoint():
    """A classification checkpoint loads into the shared layers; raw outputs are the stage outputs."""
    ref = hf_classifier("convnextv2_atto")
    backbone = ConvNeXtBackbone(model_id="atto", version="v2", min_level=3, max_level=4, output_norm=False)
    result = load_state_dict(backbone, ref.state_dict())
    skipped = {k for k in result.skipped if not k.startswith("convnextv2.encoder.stages.3.")}
    assert skipped == {"classifier.bias", "classifier.weight", "convnextv2.layernorm.bias", "convnextv2.layernorm.weight"}
    assert len(result.skipped) == 4 + 4 + 2 * 10  # stage 3 (level 5): downsample, 2 blocks of 10 arrays
    assert not result.missing and not result.unexpected
    assert "stages.3.blocks.0.dwconv" not in [l.name for l in backbone.layers]  # level 5 not built
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 160)).astype(np.float32)
    with torch.no_grad():
        hidden = ref(torch.from_numpy(x), output_hidden_states=True).hidden_states
    out = backbone(x.transpose(0, 2, 3, 1))
    assert list(out) == ["3", "4"]
    for level, i in (("3", 2), ("4", 3)):
        expected = to_nhwc(hidden[i])
        assert np.max(np.abs(out[level].numpy() - expected)) <= 1e-4 * np.max(np.abs(expected))


def test_input_tensor_with_preprocessing():
    images = tf_keras.Input((None, None, 3))
    x = tf_keras.layers.Rescaling(1 / 127.5, offset=-1)(images)
    backbone = ConvNeXtBackbone(model_id="atto", input_tensor=x)
    assert backbone.inputs[0] is images
    plain = ConvNeXtBackbone(model_id="atto")
    plain.set_weights(backbone.get_weights())
    raw = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    got, expected = backbone(raw), plain(raw / 127.5 - 1)
    for level in LEVELS:
        np.testing.assert_allclose(got[level].numpy(), expected[level].numpy(), rtol=1e-4, atol=1e-4)


def test_stochastic_depth_only_in_training():
    backbone = ConvNeXtBackbone(model_id="atto", drop_path_rate=0.3, layer_scale_init_value=1.0)
    x = np.random.default_rng(0).standard_normal((4, 64, 64, 3)).astype(np.float32)
    a, b = backbone(x, training=False), backbone(x, training=False)
    np.testing.assert_array_equal(a["5"].numpy(), b["5"].numpy())
    tf.random.set_seed(1)
    assert not np.allclose(backbone(x, training=True)["5"].numpy(), a["5"].numpy())


@pytest.mark.parametrize("frozen", [0, 2])
def test_frozen_stages_get_no_gradient(frozen):
    backbone = ConvNeXtBackbone(model_id="atto", frozen_stages=frozen)

    def frozen_layer(name):
        return name.startswith("stem.") or (name.startswith("stages.") and int(name.split(".")[1]) < frozen)

    frozen_vars = [w for l in backbone.layers if frozen_layer(l.name) for w in l.weights]
    assert frozen_vars and all(not l.trainable_weights for l in backbone.layers if frozen_layer(l.name))
    trainable_ids = {id(v) for v in backbone.trainable_variables}
    assert not any(id(v) in trainable_ids for v in frozen_vars)
    assert all(l.trainable for l in backbone.layers if l.name.startswith(f"stages.{frozen}."))
    before = [v.numpy().copy() for v in frozen_vars]
    opt = tf_keras.optimizers.SGD(1.0)
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_sum(tf.square(v)) for v in backbone(x, training=True).values())
    grads = tape.gradient(loss, backbone.trainable_variables)
    assert all(g is not None for g in grads)
    opt.apply_gradients(zip(grads, backbone.trainable_variables))
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, frozen_vars))


def test_kernel_regularizer():
    reg = tf_keras.regularizers.L2(1e-4)
    backbone = ConvNeXtBackbone(model_id="atto", kernel_regularizer=reg)
    kernels = [l.depthwise_kernel if hasattr(l, "depthwise_kernel") else l.kernel
               for l in backbone.layers if hasattr(l, "kernel") or hasattr(l, "depthwise_kernel")]
    assert len(backbone.losses) == len(kernels) == 1 + 3 + 12 * 3  # stem, downsamples, 3 per block
    expected = sum(1e-4 * np.sum(np.square(k.numpy())) for k in kernels)
    np.testing.assert_allclose(float(tf.add_n(backbone.losses)), expected, rtol=1e-5)


def test_config_round_trip_and_save(tmp_path):
    backbone = ConvNeXtBackbone(model_id="atto", version="v2", min_level=3, frozen_stages=1,
                                kernel_regularizer=tf_keras.regularizers.L2(1e-5))
    again = ConvNeXtBackbone.from_config(backbone.get_config())
    assert again.get_config() == backbone.get_config()
    path = str(tmp_path / "b.keras")
    backbone.save(path)
    loaded = tf_keras.models.load_model(path)
    x = np.random.default_rng(0).standard_normal((1, 64, 64, 3)).astype(np.float32)
    for level in ("3", "4", "5"):
        np.testing.assert_array_equal(loaded(x)[level].numpy(), backbone(x)[level].numpy())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"model_id": "medium"}, "model_id must be one of atto, femto"),
        ({"model_id": "huge", "version": "v1"}, "model_id must be one of"),
        ({"model_id": "small", "version": "v2"}, "model_id must be one of"),
        ({"version": "v3"}, "version must be one of"),
        ({"min_level": 1}, "min_level must be an integer in 2..5"),
        ({"max_level": 6}, "max_level must be an integer in 2..5"),
        ({"min_level": 4, "max_level": 3}, r"min_level \(4\) must not exceed max_level \(3\)"),
        ({"frozen_stages": 5}, "frozen_stages"),
        ({"input_specs": tf_keras.layers.InputSpec(shape=[None, 16, 64, 3])}, "height is 16"),
        ({"input_specs": tf_keras.layers.InputSpec(shape=[None, 64, 64, 1]), "weights": "x.pth"}, "1 channels"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvNeXtBackbone(**{"model_id": "atto", **kwargs})


def gradients(backbone, x):
    """The loss (outputs against fixed random weights) and its gradients, traced once; and the graph."""
    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            out = backbone(x, training=True)
            loss = tf.add_n([tf.reduce_sum(v * tf.random.stateless_normal(tf.shape(v), [1, int(k)])) for k, v in out.items()])
        return loss, tape.gradient(loss, backbone.trainable_variables)
    graph = run.get_concrete_function(x).graph
    return run(x), graph


def matmuls(graph):
    """MatMul ops in a graph and the functions it calls."""
    defs = graph.as_graph_def()
    nodes = list(defs.node) + [n for f in defs.library.function for n in f.node_def]
    return sum(n.op == "MatMul" for n in nodes)


@pytest.mark.parametrize("version,front", [("v1", False), ("v2", False), ("v2", True)])
def test_gradient_checkpointing_recomputes_and_keeps_the_gradients(version, front):
    def build(checkpointing):
        kwargs = dict(model_id="atto", version=version, min_level=3, gradient_checkpointing=checkpointing)
        if front:  # layers in front of the trunk run in the recomputing path too
            images = tf_keras.Input((None, None, 3))
            kwargs["input_tensor"] = tf_keras.layers.Rescaling(0.5)(images)
        return ConvNeXtBackbone(**kwargs)

    plain, checkpointed = build(False), build(True)
    checkpointed.set_weights(plain.get_weights())
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 96, 64, 3)).astype(np.float32))
    (loss, want), plain_graph = gradients(plain, x)
    (loss2, got), graph = gradients(checkpointed, x)
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
    for g, w, v in zip(got, want, plain.trainable_variables):
        assert np.max(np.abs(g.numpy() - w.numpy())) <= 1e-5 * np.max(np.abs(w.numpy())), v.name
    # each block's two pointwise matmuls run once more, in the backward pass
    assert matmuls(graph) == matmuls(plain_graph) + 2 * sum(plain.convnext_config.depths)
    # inference does not recompute, and the flag survives the config
    for a, b in zip(checkpointed(x).values(), plain(x).values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert ConvNeXtBackbone.from_config(checkpointed.get_config()).get_config()["gradient_checkpointing"]
