"""Necks and segmentation models: HF UperNet parity, any input size, sliding inference, training."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch
from reference import TINY_DEPTHS, TINY_DIMS, hf_config, randomize, to_nhwc
from transformers import UperNetConfig, UperNetForSemanticSegmentation

from convnext_tf.backbones import ConvNeXtBackbone, inference_function, load_state_dict, winograd
from convnext_tf.necks import FPN, AdaptiveAvgPool, UperNet
from convnext_tf.tasks import LayerDecayAdamW, MeanIoU, PixelAccuracy
from convnext_tf.tasks.segmentation import build_segmentation_model, predict_sliding, segmentation_loss


def hf_upernet(name, num_labels=5, hidden_size=64, aux_channels=32, seed=0):
    backbone = hf_config(name, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = UperNetConfig(backbone_config=backbone, num_labels=num_labels, hidden_size=hidden_size,
                           auxiliary_channels=aux_channels)
    config.backbone_config.hidden_sizes = list(backbone.hidden_sizes)  # transformers 5.24 needs a list here
    return randomize(UperNetForSemanticSegmentation(config), seed).eval()


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
def test_upernet_parity_with_hugging_face(name):
    ref = hf_upernet(name)
    version = "v2" if "v2" in name else "v1"
    model = build_segmentation_model(ConvNeXtBackbone("atto", version), 5, channels=64, aux_channels=32)
    result = load_state_dict(model, ref.state_dict())
    assert not result.missing and not result.unexpected and not result.skipped
    rng = np.random.default_rng(0)
    run = inference_function(model)  # the neck's 3x3 convolutions as Winograd F(2x2, 3x3)
    for h, w in ((512, 512), (375, 500)):
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            out = ref(torch.from_numpy(x))
            feats = ref.backbone(torch.from_numpy(x)).feature_maps
            aux = ref.auxiliary_head(feats)
        expected = to_nhwc(out.logits)
        got = model(x.transpose(0, 2, 3, 1)).numpy()
        assert got.shape == expected.shape == (1, h, w, 5)
        assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected)), f"{h}x{w}"
        fast = run(x.transpose(0, 2, 3, 1)).numpy()
        assert np.max(np.abs(fast - expected)) <= 1e-4 * np.max(np.abs(expected)), f"inference_function {h}x{w}"
        ours_aux = model.aux_head(model.backbone(x.transpose(0, 2, 3, 1))["4"]).numpy()
        assert np.max(np.abs(ours_aux - to_nhwc(aux))) <= 1e-4 * np.max(np.abs(to_nhwc(aux)))


def test_inference_function_runs_the_necks_3x3_convolutions_as_winograd_in_float32_only():
    model = build_segmentation_model(ConvNeXtBackbone("atto"), 3, channels=16, aux_head=False)
    function = inference_function(model).get_concrete_function(tf.TensorSpec((1, None, None, 3)))
    ops = [op.type for op in function.graph.get_operations()]
    kernels = [op.inputs[1].shape[:2] for op in function.graph.get_operations() if op.type == "Conv2D"]
    assert kernels and (3, 3) not in kernels  # 1x1 convolutions stay direct
    # UperNet's 3x3 conv modules: bottleneck, three fpn_convs, fpn_bottleneck; a loop over bands each
    assert ops.count("StatelessWhile") + ops.count("While") == 5
    # their Winograd kernels (16, C, K) are captured inputs, not constants copied with the graph
    convs = [l for l in model.submodules if isinstance(l, winograd.WinogradConv2D)]
    wanted = sorted((16, *l.kernel.shape[2:]) for l in convs)
    assert len(wanted) == 5
    assert sorted(tuple(t.shape) for t in function.captured_inputs if t.shape.rank == 3) == wanted
    constants = [tuple(op.outputs[0].shape) for op in function.graph.get_operations() if op.type == "Const"]
    assert not set(wanted) & set(constants)
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")  # oneDNN's direct (AMX) convolution is faster
    mixed = build_segmentation_model(ConvNeXtBackbone("atto"), 3, channels=16, aux_head=False)
    graph = inference_function(mixed).get_concrete_function(tf.TensorSpec((1, None, None, 3))).graph
    assert (3, 3) in [op.inputs[1].shape[:2] for op in graph.get_operations() if op.type == "Conv2D"]


@pytest.fixture(params=["default bands", "one tile row per band"])
def winograd_bands(request, monkeypatch):
    if request.param == "one tile row per band":
        monkeypatch.setattr(winograd, "BAND_FLOATS", 1)


WINOGRAD_SIZES = [(1, 1, 1), (2, 5, 8), (1, 16, 16), (2, 31, 20)]  # (n, h, w): odd and even


@pytest.mark.parametrize("n,h,w", WINOGRAD_SIZES)
def test_winograd_convolution_equals_the_direct_one(n, h, w, winograd_bands):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w, 6)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 6, 4)).astype(np.float32)
    want = tf.nn.conv2d(x, kernel, 1, "SAME").numpy()
    varying = tf.function(winograd.conv3x3, input_signature=[tf.TensorSpec((None, None, None, 6)),
                                                               tf.TensorSpec((16, 6, 4))])
    for conv in (winograd.conv3x3, tf.function(winograd.conv3x3, reduce_retracing=True), varying):
        got = conv(tf.constant(x), winograd.transform_kernel(kernel)).numpy()
        assert got.shape == want.shape and np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    with pytest.raises(ValueError, match=r"\(3, 3, C, K\) kernel; got shape \(5, 5, 6, 4\)"):
        winograd.transform_kernel(np.zeros((5, 5, 6, 4), np.float32))


def _called_functions(graph) -> str:
    return " ".join(f.signature.name for f in graph.as_graph_def().library.function)


def test_winograd_transforms_are_xla_compiled_for_static_shapes_only():
    """XLA compiles once per shape: inputs of varying size take depthwise convolutions instead."""
    conv = tf.function(winograd.conv3x3)
    static = conv.get_concrete_function(tf.TensorSpec((2, 9, 7, 6)), tf.TensorSpec((16, 6, 4)))
    varying = conv.get_concrete_function(tf.TensorSpec((2, None, None, 6)), tf.TensorSpec((16, 6, 4)))
    assert "_compiled_input_transform" in _called_functions(static.graph)
    assert "_compiled_input_transform" not in _called_functions(varying.graph)
    assert "DepthwiseConv2dNative" in [n.op for f in varying.graph.as_graph_def().library.function for n in f.node_def]


@pytest.mark.parametrize("n,h,w", WINOGRAD_SIZES)
def test_winograd_training_convolution_and_gradients_equal_the_direct_ones(n, h, w, winograd_bands):
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((n, h, w, 6)).astype(np.float32), rng.standard_normal((n, h, w, 4)).astype(np.float32)
    kernel = tf.constant(rng.standard_normal((3, 3, 6, 4)).astype(np.float32))

    def output_and_gradients(conv, x):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = conv(x, kernel)
        return (y, *tape.gradient(y, [x, kernel], output_gradients=tf.constant(dy)))

    want = output_and_gradients(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"), tf.constant(x))
    traced = tf.function(output_and_gradients)
    for run in (output_and_gradients, traced):
        got = run(winograd.conv3x3_for_training, tf.constant(x))
        for name, a, b in zip(("output", "input gradient", "kernel gradient"), got, want):
            assert a.shape == b.shape and np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)), name
    called = _called_functions(traced.get_concrete_function(winograd.conv3x3_for_training, tf.constant(x)).graph)
    assert "_compiled_input_transform" in called and "_compiled_gradient_transform" in called  # XLA loops


def test_winograd_conv2d_trains_by_winograd_on_large_static_shapes_only(monkeypatch):
    layer = winograd.WinogradConv2D(4, 3, padding="same")
    x = np.random.default_rng(0).standard_normal((2, 9, 7, 10)).astype(np.float32)

    def graph(spec, training):
        return tf.function(lambda x: layer(x, training=training)).get_concrete_function(spec).graph

    # too few channels and tiles for the transforms to pay: the direct convolution
    assert "Conv2D" in [op.type for op in graph(tf.TensorSpec((2, 9, 7, 10)), True).get_operations()]
    large = winograd.WinogradConv2D(512, 3, padding="same")  # the bounds: 256 channels, 2^16 tiles x channels
    assert [winograd.trains_by_winograd(large, tf.TensorShape(shape)) for shape in (
        (2, 16, 16, 512), (2, 15, 15, 512), (2, 14, 14, 512), (2, 32, 32, 256), (2, 16, 16, 256),
        (2, 64, 64, 128))] == [True, True, False, True, False, False]
    # minimal bounds below: this small layer as if it were large
    monkeypatch.setattr(winograd, "TRAINING_MIN_CHANNELS", 4)
    monkeypatch.setattr(winograd, "TRAINING_MIN_TILE_CHANNELS", 2 * 5 * 4 * 4)
    np.testing.assert_allclose(layer(x, training=True), layer(x), atol=1e-5)
    static = graph(tf.TensorSpec((2, 9, 7, 10)), True)
    assert "Conv2D" not in [op.type for op in static.get_operations()]
    assert "_compiled_input_transform" in _called_functions(static)  # the XLA transforms
    for spec, training in ((tf.TensorSpec((None, 9, 7, 10)), True), (tf.TensorSpec((2, 9, 7, 10)), False),
                           (tf.TensorSpec((1, 9, 7, 10)), True)):  # (batch 1: too few tiles)
        assert "Conv2D" in [op.type for op in graph(spec, training).get_operations()]
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    mixed = winograd.WinogradConv2D(4, 3, padding="same")
    mixed.build((2, 9, 7, 10))
    assert "Conv2D" in [op.type for op in tf.function(lambda x: mixed(x, training=True)).get_concrete_function(
        tf.TensorSpec((2, 9, 7, 10))).graph.get_operations()]


def test_upernet_training_gradients_equal_pytorch_autograd(monkeypatch):
    """A training step of UperNet with its auxiliary head (batch statistics in BatchNorm) has
    PyTorch autograd's gradients, its 3x3 convolutions computed by Winograd."""
    monkeypatch.setattr(winograd, "TRAINING_MIN_CHANNELS", 1)  # small layers as if they were large
    monkeypatch.setattr(winograd, "TRAINING_MIN_TILE_CHANNELS", 1)
    ref = hf_upernet("convnextv2_atto").train()
    model = build_segmentation_model(ConvNeXtBackbone("atto", "v2"), 5, channels=64, aux_channels=32,
                                     dropout_rate=0.0)  # HF's heads have no dropout
    load_state_dict(model, ref.state_dict())
    assert len([l for l in model.submodules if isinstance(l, winograd.WinogradConv2D)]) == 6  # trained by Winograd
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 96, 64)).astype(np.float32)
    p, q = rng.standard_normal((2, 2, 5, 96, 64)).astype(np.float32)  # the loss: random projections
    logits = ref(torch.from_numpy(x)).logits
    aux = ref.auxiliary_head(ref.backbone(torch.from_numpy(x)).feature_maps)  # as HF's loss: resized bilinearly
    aux = torch.nn.functional.interpolate(aux, size=(96, 64), mode="bilinear", align_corners=False)
    (logits.mul(torch.from_numpy(p)).sum() + aux.mul(torch.from_numpy(q)).sum()).backward()
    with tf.GradientTape() as tape:
        ours = model(x.transpose(0, 2, 3, 1), training=True)
        loss = tf.reduce_sum(ours["logits"] * p.transpose(0, 2, 3, 1)) + tf.reduce_sum(
            ours["aux_logits"] * q.transpose(0, 2, 3, 1))
    grads = tape.gradient(loss, model.trainable_variables)
    state = {**ref.state_dict(), **{key: param.grad for key, param in ref.named_parameters()}}
    load_state_dict(model, state)  # PyTorch's gradients into our variables, through the converter's mapping
    # BatchNorm over two 1x1 maps (the pooling module's first scale) leaves some gradients at the
    # level of rounding in both frameworks: the bound is relative to the largest gradient
    largest = max(np.max(np.abs(variable.numpy())) for variable in model.trainable_variables)
    for variable, grad in zip(model.trainable_variables, grads):
        assert np.max(np.abs(grad.numpy() - variable.numpy())) <= 1e-3 * largest, variable.name


@pytest.mark.parametrize("h,w,bins", [(7, 7, 6), (23, 31, 6), (12, 5, 3), (1, 1, 2), (15, 11, 1)])
def test_adaptive_pool_equals_pytorch(h, w, bins):
    x = np.random.default_rng(0).standard_normal((2, h, w, 3)).astype(np.float32)
    expected = torch.nn.AdaptiveAvgPool2d(bins)(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(AdaptiveAvgPool(bins)(x).numpy(), expected.transpose(0, 2, 3, 1), atol=1e-6)


@pytest.mark.parametrize("neck", ["upernet", "fpn"])
def test_any_input_size_and_custom_input_tensor(neck):
    images = tf_keras.Input((None, None, 3))
    x = tf_keras.layers.Rescaling(1 / 127.5, offset=-1)(images)
    model = build_segmentation_model(ConvNeXtBackbone("atto", input_tensor=x), 3, neck=neck, channels=32)
    for h, w in ((512, 512), (375, 500), (333, 517), (768, 1024), (32, 32)):
        assert model(np.zeros((1, h, w, 3), np.float32)).shape == (1, h, w, 3)
    train_out = model(np.zeros((2, 96, 80, 3), np.float32), training=True)
    assert set(train_out) == {"logits", "aux_logits"} and train_out["aux_logits"].shape == (2, 96, 80, 3)
    no_aux = build_segmentation_model("convnext_atto", 3, neck=neck, aux_head=False, channels=32)
    assert no_aux(np.zeros((1, 64, 64, 3), np.float32), training=True).shape == (1, 64, 64, 3)


def test_fpn_levels_and_extra_levels():
    backbone = ConvNeXtBackbone("atto")
    fpn = FPN(backbone.output_specs, min_level=3, max_level=7, num_filters=16)
    out = fpn(backbone(np.zeros((1, 375, 500, 3), np.float32)))
    assert {k: tuple(v.shape[1:3]) for k, v in out.items()} == {
        "3": (46, 62), "4": (23, 31), "5": (11, 15), "6": (6, 8), "7": (3, 4)
    }
    assert all(v.shape[-1] == 16 for v in out.values())


def test_sliding_inference():
    model = build_segmentation_model("convnext_atto", 4, channels=32)
    image = np.random.default_rng(0).standard_normal((100, 140, 3)).astype(np.float32)
    whole = model(image[None]).numpy()[0]
    np.testing.assert_allclose(predict_sliding(model, image, crop_size=160, stride=100), whole, rtol=1e-5, atol=1e-5)
    # overlapping crops: the average of each crop's logits where they overlap (computed here by hand)
    slid = predict_sliding(model, image, crop_size=96, stride=64)
    crops = [(0, 0), (0, 44), (4, 0), (4, 44)]  # rows 0..96 and 4..100, columns 0..96 and 44..140
    total, count = np.zeros((100, 140, 4)), np.zeros((100, 140, 1))
    for y, x in crops:
        total[y:y + 96, x:x + 96] += model(image[None, y:y + 96, x:x + 96]).numpy()[0]
        count[y:y + 96, x:x + 96] += 1
    np.testing.assert_allclose(slid, total / count, rtol=1e-5, atol=1e-5)


def test_loss_ignores_255():
    logits = tf.constant(np.random.default_rng(0).standard_normal((1, 2, 2, 3)), tf.float32)
    labels = tf.constant([[[0, 255], [2, 1]]])
    p = tf.nn.log_softmax(logits).numpy()[0]
    expected = -(p[0, 0, 0] + p[1, 0, 2] + p[1, 1, 1]) / 3
    np.testing.assert_allclose(segmentation_loss(labels, logits).numpy(), expected, rtol=1e-6)


def test_training_drives_loss_down():
    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    labels = np.zeros((2, 64, 64), np.int32)  # 3 regions: left, top right, bottom right
    labels[:, :, 32:] = 1
    labels[:, 32:, 32:] = 2
    labels[1] = labels[1, :, ::-1]
    colours = np.array([[-0.8, 0.2, 0.5], [0.6, -0.5, 0.1], [0.1, 0.7, -0.6]], np.float32)
    images = colours[labels] + rng.normal(0, 0.2, (2, 64, 64, 3)).astype(np.float32)
    labels[:, :4] = 255  # an ignored band
    backbone = ConvNeXtBackbone(depths=TINY_DEPTHS, dims=TINY_DIMS)  # behaviour, not parity: a small one
    model = build_segmentation_model(backbone, 3, channels=32)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    history = model.fit(images, labels, batch_size=2, epochs=40, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0], history[::8]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"neck": "aspp"}, r"neck must be one of \['fpn', 'upernet'\]"),
        ({"backbone": ConvNeXtBackbone("atto", max_level=4)}, r"lacks levels \['5'\]"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"backbone": "convnext_atto", "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_segmentation_model(**args)


def test_small_images_and_missing_levels():
    model = build_segmentation_model("convnext_atto", 3, channels=16)
    with pytest.raises(ValueError, match="Input height is 16, but ConvNeXt needs at least 32 pixels"):
        model(np.zeros((1, 16, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"gives levels \['3', '4'\], but the neck needs \['2', '5'\]"):
        UperNet({"3": tf.TensorShape([None, None, None, 8]), "4": tf.TensorShape([None, None, None, 8])})


def test_keras_weights_file_round_trip(tmp_path):
    from convnext_tf.backbones import save_weights

    model = build_segmentation_model(ConvNeXtBackbone("atto", version="v2"), 3, channels=16)
    load_state_dict(model, hf_upernet("convnextv2_atto", num_labels=3, hidden_size=16, aux_channels=256).state_dict())
    save_weights(model, tmp_path / "seg.weights.h5")
    again = build_segmentation_model("convnextv2_atto", 3, channels=16, weights=str(tmp_path / "seg.weights.h5"))
    x = np.random.default_rng(0).standard_normal((1, 96, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(again(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("policy,eps", [("mixed_float16", 2.0**-10), ("mixed_bfloat16", 2.0**-7)])
def test_segmentation_under_mixed_precision(policy, eps):
    x = np.random.default_rng(0).standard_normal((1, 96, 128, 3)).astype(np.float32)
    ref = hf_upernet("convnext_atto", num_labels=3, hidden_size=32)
    model = build_segmentation_model("convnext_atto", 3, channels=32, aux_channels=32)
    load_state_dict(model, ref.state_dict())
    expected = model(x).numpy()
    tf_keras.mixed_precision.set_global_policy(policy)
    mixed = build_segmentation_model("convnext_atto", 3, channels=32, aux_channels=32)
    load_state_dict(mixed, ref.state_dict())
    out = mixed(x)
    assert out.dtype == tf.float32 and mixed.neck.get_layer("neck.bottleneck.conv").compute_dtype == policy.split("_")[1]
    assert np.max(np.abs(out.numpy() - expected)) <= 5 * eps * np.max(np.abs(expected))  # as the backbone's bound


def test_a_compiled_model_reloads_compiled_with_its_optimizer_state(tmp_path, caplog):
    backbone = ConvNeXtBackbone(version="v2", depths=TINY_DEPTHS, dims=TINY_DIMS)
    model = build_segmentation_model(backbone, 3, neck="fpn", channels=16, aux_head=False)
    model.compile(LayerDecayAdamW(1e-3), metrics=[MeanIoU(3), PixelAccuracy()])
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 64, 64, 3)).astype("float32"), rng.integers(0, 3, (2, 64, 64))
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    again = tf_keras.models.load_model(tmp_path / "m.keras")
    assert "compile() was not called" not in caplog.text
    assert isinstance(again.optimizer, LayerDecayAdamW) and int(again.optimizer.iterations) == 1
    for a, b in zip(again.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert again.evaluate(x, y, verbose=0, return_dict=True) == model.evaluate(x, y, verbose=0, return_dict=True)
