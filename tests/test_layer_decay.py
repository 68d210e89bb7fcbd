"""Layer-wise learning-rate decay against the official formulas, in Keras `fit` and in Model Garden."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from convnext_tf.backbones import ConvNeXtBackbone, create_model
from convnext_tf.backbones.config import MODEL_NAMES, ConvNeXtConfig
from convnext_tf.tasks import LayerDecayAdamW, layer_decay, registry_imports  # noqa: F401
from convnext_tf.tasks.segmentation import build_segmentation_model
from official.core import exp_factory
from official.modeling import optimization

# ---- the official assigners, on the official parameter names (ConvNeXt-V2's optim_factory.py and
# mmsegmentation's LearningRateDecayOptimizerConstructor), written out here as the reference


def official_single(name, depths):
    if name.startswith("downsample_layers"):
        return sum(depths[: int(name.split(".")[1])]) + 1
    if name.startswith("stages"):
        stage, block = int(name.split(".")[1]), int(name.split(".")[2])
        return sum(depths[:stage]) + block + 1
    return sum(depths) + 1


def official_group(name, num_max_layer=12):
    if name.startswith("downsample_layers"):
        stage = int(name.split(".")[1])
        return {0: 0, 1: 2, 2: 3, 3: num_max_layer}[stage]
    if name.startswith("stages"):
        stage, block = int(name.split(".")[1]), int(name.split(".")[2])
        return {0: 1, 1: 2, 2: 3 + block // 3, 3: num_max_layer}[stage]
    return num_max_layer + 1


def mmseg_stage_wise(name, num_layers):
    num_layers += 2
    if name.startswith("backbone.downsample_layers"):
        layer = 0
    elif name.startswith("backbone.stages"):
        layer = int(name.split(".")[2]) + 1
    else:
        layer = num_layers - 1
    return layer, num_layers - layer - 1  # the id and the exponent of the decay rate


def names(depths):
    """(our variable name, the official parameter name) for every kind of backbone layer, and a head."""
    pairs = [("stem.conv/kernel:0", "downsample_layers.0.0.weight"), ("stem.norm/gamma:0", "downsample_layers.0.1.weight")]
    for i, depth in enumerate(depths):
        if i:
            pairs.append((f"stages.{i}.downsample.conv/bias:0", f"downsample_layers.{i}.1.bias"))
        for j in range(depth):
            pairs.append((f"stages.{i}.blocks.{j}.pwconv1/kernel:0", f"stages.{i}.{j}.pwconv1.weight"))
    pairs += [("output_norms.3/gamma:0", "norm3.weight"), ("neck.fpn_bottleneck.conv/kernel:0", "decode_head.x"),
              ("head.fc/bias:0", "head.bias")]
    return pairs


@pytest.mark.parametrize("variant", MODEL_NAMES)
def test_ids_and_rates_follow_the_official_formulas(variant):
    depths = ConvNeXtConfig.from_name(variant).depths
    decay = 0.9
    for ours, theirs in names(depths):
        n = sum(depths)
        assert layer_decay.layer_id(ours, "single", depths) == official_single(theirs, depths), ours
        assert layer_decay.lr_scale(ours, decay, "single", depths) == pytest.approx(
            decay ** (n + 1 - official_single(theirs, depths)))
        for num_layers in (6, 12):
            if num_layers == 12:  # the ConvNeXt repos' group assigner has 12 layers
                assert layer_decay.layer_id(ours, "group", depths) == official_group(theirs), ours
            assert layer_decay.layer_id(ours, "group", depths, num_layers) == official_group(theirs, num_layers)
            mm_id, exponent = mmseg_stage_wise("backbone." + theirs if not theirs.startswith(("head", "decode")) else theirs,
                                               num_layers)
            assert layer_decay.layer_id(ours, "stage_wise", depths, num_layers) == mm_id, ours
            assert layer_decay.lr_scale(ours, decay, "stage_wise", depths, num_layers) == pytest.approx(decay ** exponent)


def test_every_variable_of_a_segmentation_model_gets_its_layer():
    model = build_segmentation_model(ConvNeXtBackbone("atto", version="v2"), 3, channels=16, aux_channels=8)
    depths = model.backbone.convnext_config.depths
    backbone = {v.name for v in model.backbone.trainable_variables if not v.name.startswith("output_norms")}
    for v in model.trainable_variables:
        parsed = layer_decay.parse_name(v.name)
        assert (parsed is not None) == (v.name in backbone), v.name
    assert layer_decay.depths_of(v.name for v in model.trainable_variables) == depths
    frozen = ConvNeXtBackbone("atto", frozen_stages=1)
    with pytest.raises(ValueError, match="blocks of stage 0 .* pass depths= explicitly"):
        layer_decay.depths_of(v.name for v in frozen.trainable_variables)


def small_model():
    return build_segmentation_model(
        ConvNeXtBackbone("atto", version="v2", depths=(1, 1, 2, 1), dims=(16, 32, 48, 64)), 3, channels=16, aux_channels=8
    )


def first_step_updates(model, optimizer, grads_scale=1.0):
    """|change| / lr of every variable after one step on fixed gradients (0 for a zero gradient)."""
    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.standard_normal(v.shape).astype(np.float32) * grads_scale) for v in model.trainable_variables]
    before = [v.numpy() for v in model.trainable_variables]
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return {v.name: v.numpy() - b for v, b in zip(model.trainable_variables, before)}


def test_keras_fit_scales_the_first_step_per_layer():
    tf_keras.utils.set_random_seed(0)
    model = small_model()
    decay = 0.5
    model.compile(optimizer=LayerDecayAdamW(
        1e-3, weight_decay=0.0, layer_decay=decay, scheme="stage_wise", num_layers=4, epsilon=1e-12
    ))
    before = {v.name: v.numpy() for v in model.trainable_variables}
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, (2, 64, 64))
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    # A first Adam step moves a weight by lr * scale * |g| / (|g| + epsilon): never more than
    # lr * scale, and exactly that for any weight with a real gradient (some have none: a
    # LayerNorm's beta feeding a BatchNorm), so each layer's largest step is its rate.
    largest = {}
    for v in model.trainable_variables:
        layer = layer_decay.layer_id(v.name, "stage_wise", (1, 1, 2, 1), 4)
        expected = 1e-3 * decay ** (4 + 1 - layer)
        step = np.abs(v.numpy() - before[v.name]).max()
        assert step <= expected * (1 + 1e-3), v.name  # float32 rounding of weight - step
        largest[layer] = max(largest.get(layer, 0.0), step / expected)
    assert sorted(largest) == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(list(largest.values()), 1.0, rtol=1e-3)


def test_model_garden_optimizer_from_yaml_matches_keras():
    params = exp_factory.get_exp_config("convnext_seg_upernet_ade20k")
    params.override({"trainer": {"optimizer_config": {
        "optimizer": {"adamw_layer_decay": {"layer_decay": 0.7, "weight_decay": 0.1, "num_layers": 4}},
        "learning_rate": {"type": "constant", "constant": {"learning_rate": 1e-3}},
        "warmup": {"type": None},
    }}}, is_strict=True)
    factory = optimization.OptimizerFactory(params.trainer.optimizer_config)
    garden = factory.build_optimizer(factory.build_learning_rate())
    assert isinstance(garden, LayerDecayAdamW) and garden.scheme == "stage_wise"
    keras = LayerDecayAdamW(1e-3, weight_decay=0.1, layer_decay=0.7, scheme="stage_wise", num_layers=4)
    updates = []
    for optimizer in (garden, keras):
        tf_keras.utils.set_random_seed(0)
        updates.append(first_step_updates(small_model(), optimizer))
    assert updates[0].keys() == updates[1].keys()
    for name in updates[0]:
        np.testing.assert_allclose(updates[0][name], updates[1][name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_weight_decay_skips_biases_and_norms_and_is_scaled_per_layer():
    tf_keras.utils.set_random_seed(0)
    model = small_model()
    lr, wd, decay = 1e-2, 0.1, 0.5
    optimizer = LayerDecayAdamW(lr, weight_decay=wd, layer_decay=decay, scheme="single")
    before = {v.name: v.numpy() for v in model.trainable_variables}
    updates = first_step_updates(model, optimizer, grads_scale=0.0)  # no gradient: only weight decay moves weights
    for v in model.trainable_variables:
        expected = 0.0 if len(v.shape) <= 1 else -lr * optimizer.lr_scale_of(v) * wd * before[v.name]
        rounding = 2 * np.finfo(np.float32).eps * np.abs(before[v.name]).max()  # of weight - its new value
        np.testing.assert_allclose(updates[v.name], expected, rtol=1e-5, atol=rounding, err_msg=v.name)
    assert optimizer.lr_scale_of(model.backbone.get_layer("stem.conv").kernel) == pytest.approx(decay ** 5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="scheme"):
        LayerDecayAdamW(scheme="layer")
    with pytest.raises(ValueError, match="layer_decay"):
        LayerDecayAdamW(layer_decay=1.5)
    with pytest.raises(ValueError, match="four stages"):
        LayerDecayAdamW(depths=(3, 3, 9))


def test_serialises():
    optimizer = LayerDecayAdamW(2e-4, layer_decay=0.8, scheme="group", num_layers=6, depths=(3, 3, 9, 3))
    copy = LayerDecayAdamW.from_config(optimizer.get_config())
    assert (copy.layer_decay, copy.scheme, copy.num_layers, copy.depths) == (0.8, "group", 6, (3, 3, 9, 3))


def test_classifier_fit_with_layer_decay():
    model = create_model("convnext_atto", input_shape=(32, 32, 3), classes=3)
    optimizer = LayerDecayAdamW(1e-3, layer_decay=0.9, scheme="single")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((2, 32, 32, 3), np.float32), np.array([0, 2]), verbose=0)
    depths = ConvNeXtConfig.from_name("convnext_atto").depths  # (2, 2, 6, 2): the stem is layer 1 of 12
    assert optimizer.lr_scale_of(model.get_layer("head.fc").kernel) == 1.0
    assert optimizer.lr_scale_of(model.get_layer("stem.conv").kernel) == pytest.approx(0.9 ** sum(depths))
