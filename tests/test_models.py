"""The builder API: names, shapes, pooling, input tensors, stochastic depth, saving, bad input."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from reference import hf_classifier

from convnext_tf import backbones
from convnext_tf.backbones import create_model, list_models, load_state_dict, preprocess_input


def test_list_and_create_cover_every_builder():
    names = list_models()
    assert len(names) == 17
    for name in names:
        assert callable(getattr(backbones, name))
    with pytest.raises(ValueError, match="convnext_tiny, convnext_small"):
        create_model("convnext_medium")


def test_odd_sizes_floor_like_pytorch():
    # PyTorch: floor((n - k) / s) + 1 for the valid 4x4/4 stem and 2x2/2 downsamples.
    model = create_model("convnext_atto", input_shape=(None, None, 3), include_top=False)
    stages = tf_keras.Model(model.inputs, [model.get_layer(n).output for n in backbones.stage_output_names(
        backbones.ConvNeXtConfig.from_name("convnext_atto"))])
    outs = stages(np.zeros((1, 375, 500, 3), np.float32))
    h, w = 375, 500
    expected = []
    for k in (4, 2, 2, 2):
        h, w = (h - k) // k + 1, (w - k) // k + 1
        expected.append((h, w))
    assert [tuple(o.shape[1:3]) for o in outs] == expected == [(93, 125), (46, 62), (23, 31), (11, 15)]


@pytest.mark.parametrize("pooling,shape", [(None, (2, 7, 7, 320)), ("avg", (2, 320)), ("max", (2, 320))])
def test_pooling(pooling, shape):
    model = create_model("convnext_atto", include_top=False, pooling=pooling)
    x = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    out = model(x).numpy()
    assert out.shape == shape
    if pooling:
        fmap = tf_keras.Model(model.inputs, model.get_layer("stages.3.blocks.1").output)(x).numpy()
        np.testing.assert_allclose(out, fmap.mean((1, 2)) if pooling == "avg" else fmap.max((1, 2)), rtol=1e-5, atol=1e-5)


def test_head_options():
    model = create_model("convnext_atto", classes=10, classifier_activation="softmax", head_init_scale=0.001)
    probs = model(np.zeros((1, 224, 224, 3), np.float32)).numpy()
    assert probs.shape == (1, 10)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
    assert np.std(model.get_layer("head.fc").kernel.numpy()) < 1e-4  # 0.02 x 0.001
    assert model.get_layer("stages.0.blocks.0.layer_scale").gamma.numpy()[0] == pytest.approx(1e-6)
    v1_no_ls = create_model("convnext_atto", layer_scale_init_value=0)
    assert not any(l.name.endswith("layer_scale") for l in v1_no_ls.layers)
    with pytest.raises(ValueError, match="V2 has no layer scale"):
        create_model("convnextv2_atto", layer_scale_init_value=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        create_model("convnext_atto", include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="classes"):
        create_model("convnext_atto", classes=0)


@pytest.mark.parametrize("shape", [(31, 224, 3), (224, 16, 3)])
def test_too_small_input(shape):
    with pytest.raises(ValueError, match="at least 32 pixels"):
        create_model("convnext_atto", input_shape=shape)


def test_input_tensor_with_preprocessing_layers():
    """The Keras way: preprocessing layers in front, the model starts at the raw image input."""
    ref = hf_classifier("convnext_atto")
    images = tf_keras.Input((None, None, 3))
    x = tf_keras.layers.Rescaling(1 / 255.0)(images)
    x = tf_keras.layers.Normalization(mean=[0.485, 0.456, 0.406], variance=np.square([0.229, 0.224, 0.225]))(x)
    model = create_model("convnext_atto", input_tensor=x)
    assert model.inputs[0] is images
    plain = create_model("convnext_atto", input_shape=(None, None, 3))
    for m in (model, plain):
        load_state_dict(m, ref.state_dict())
    raw = np.random.default_rng(0).uniform(0, 255, (2, 96, 128, 3)).astype(np.float32)
    np.testing.assert_allclose(model(raw).numpy(), plain(preprocess_input(raw)).numpy(), rtol=1e-4, atol=1e-4)
    # a plain (non-Keras) tensor is wrapped in an Input
    wrapped = create_model("convnext_atto", input_tensor=tf.zeros((1, 64, 64, 3)), include_top=False)
    assert wrapped.output_shape == (1, 2, 2, 320)


def test_stochastic_depth():
    model = create_model("convnext_atto", drop_path_rate=0.5)
    rates = [l.rate for l in model.layers if type(l).__name__ == "StochasticDepth"]
    np.testing.assert_allclose(rates, np.linspace(0, 0.5, 12))  # linear rule over all blocks
    x = np.random.default_rng(0).standard_normal((8, 64, 64, 3)).astype(np.float32)
    model = create_model("convnext_atto", drop_path_rate=0.5, input_shape=(64, 64, 3))
    for layer in model.layers:  # make the branches matter
        if layer.name.endswith("layer_scale"):
            layer.gamma.assign(tf.ones_like(layer.gamma))
    np.testing.assert_array_equal(model(x, training=False).numpy(), model(x, training=False).numpy())
    tf.random.set_seed(0)
    assert not np.allclose(model(x, training=True).numpy(), model(x, training=False).numpy())


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
@pytest.mark.parametrize("fmt", ["savedmodel", "keras", "h5"])
def test_save_and_reload(name, fmt, tmp_path):
    model = create_model(name, input_shape=(None, None, 3), drop_path_rate=0.1)
    load_state_dict(model, hf_classifier(name).state_dict())
    path = str(tmp_path / {"savedmodel": "saved", "keras": "m.keras", "h5": "m.h5"}[fmt])
    model.save(path)
    tf_keras.backend.clear_session()
    again = tf_keras.models.load_model(path)
    assert type(again) is type(model) and again.name == model.name
    x = np.random.default_rng(0).standard_normal((2, 64, 96, 3)).astype(np.float32)
    np.testing.assert_array_equal(again(x, training=False).numpy(), model(x, training=False).numpy())
    assert again.get_layer("stages.0.blocks.1").rate == model.get_layer("stages.0.blocks.1").rate
