"""Parity with the PyTorch reference (Hugging Face transformers) for every variant."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch
from reference import hf_classifier, to_nhwc

from convnext_tf.backbones import (
    MODEL_NAMES, ConvNeXtConfig, create_model, export_state_dict, load_state_dict, stage_output_names,
)

# Variants from base up are large enough to run only in `make test-all`.
LARGE_SIZES = ("base", "large", "xlarge", "huge")


# Parameter counts with the 1000-class head as published in the two papers, in millions
# (V1 atto..nano are timm's own and are checked against the reference count alone).
PUBLISHED_M = {
    "convnext_tiny": 28.6, "convnext_small": 50.2, "convnext_base": 88.6, "convnext_large": 197.8,
    "convnext_xlarge": 350.2, "convnextv2_atto": 3.7, "convnextv2_femto": 5.2, "convnextv2_pico": 9.1,
    "convnextv2_nano": 15.6, "convnextv2_tiny": 28.6, "convnextv2_base": 88.7, "convnextv2_large": 197.9,
    "convnextv2_huge": 660.3,
}


def _variants():
    for name in MODEL_NAMES:
        slow = ConvNeXtConfig.from_name(name).model_id in LARGE_SIZES
        yield pytest.param(name, marks=pytest.mark.slow if slow else (), id=name)


def with_stages(model, name):
    """Our classifier as a model that returns the four stage outputs and the logits."""
    stages = [model.get_layer(n).output for n in stage_output_names(ConvNeXtConfig.from_name(name))]
    return tf_keras.Model(model.inputs, stages + [model.output])


def assert_close(ours, ref, what, bound=1e-4):
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    err = np.max(np.abs(ours - ref))
    scale = np.max(np.abs(ref))
    assert err <= bound * scale, f"{what}: max |ours - ref| = {err:.3g} > {bound:g} x {scale:.3g}"


@pytest.mark.parametrize("name", list(_variants()))
def test_parity_with_reference(name):
    ref = hf_classifier(name)
    model = create_model(name, input_shape=(None, None, 3))
    ref_params = sum(p.numel() for p in ref.parameters())
    assert model.count_params() == ref_params
    if name in PUBLISHED_M:  # published figures are rounded or truncated to 0.1M (V2-L: 197.957M)
        assert abs(model.count_params() / 1e6 - PUBLISHED_M[name]) < 0.1

    result = load_state_dict(model, ref.state_dict())
    assert not result.missing and not result.unexpected
    feats = with_stages(model, name)
    rng = np.random.default_rng(0)
    for h, w in ((224, 224), (193, 257)):
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            out = ref(torch.from_numpy(x), output_hidden_states=True)
        ours = [np.asarray(t) for t in feats(x.transpose(0, 2, 3, 1), training=False)]
        for i in range(4):
            assert_close(ours[i], to_nhwc(out.hidden_states[i + 1]), f"{name} {h}x{w} stage {i}")
        assert_close(ours[4], out.logits.numpy(), f"{name} {h}x{w} logits")
    del ref, model, feats
    tf_keras.backend.clear_session()


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_training_gradients_match_reference(name, policy):
    """A training step's gradients (the hand-written LayerNorm and GELU gradients, the float32
    depthwise path under mixed precision) equal PyTorch autograd's on the reference model."""
    ref = hf_classifier(name).train()  # no dropout or drop path in the reference at rate 0
    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        model = create_model(name, input_shape=(64, 96, 3))
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    load_state_dict(model, ref.state_dict())
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 64, 96)).astype(np.float32)
    projection = rng.standard_normal((2, 1000)).astype(np.float32)  # loss: a random projection of the logits

    ref(torch.from_numpy(x)).logits.mul(torch.from_numpy(projection)).sum().backward()
    with tf.GradientTape() as tape:
        logits = tf.cast(model(x.transpose(0, 2, 3, 1), training=True), tf.float32)
        loss = tf.reduce_sum(logits * projection)
    grads = tape.gradient(loss, model.trainable_variables)
    for variable, grad in zip(model.trainable_variables, grads):  # the gradients in PyTorch's names and layouts
        variable.assign(grad)
    ours = export_state_dict(model)
    # float32: rounding alone; bfloat16 autocast-style training: about 3 significant digits per op
    bound = 1e-4 if policy == "float32" else 0.2
    for key, param in ref.named_parameters():
        assert_close(ours[key], param.grad.numpy(), f"{name} {policy} gradient of {key}", bound)


def test_grn_gradient_with_an_all_zero_channel_matches_reference():
    """A channel that is zero everywhere (GELU underflows to exact zeros) has norm 0: the gradient
    is finite and equals torch's (vector_norm's backward gives 0 there), not sqrt's NaN."""
    from transformers.models.convnextv2.modeling_convnextv2 import ConvNextV2GRN

    from convnext_tf.backbones.layers import GRN

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 7, 8)).astype(np.float32)
    x[0, :, :, 3] = 0.0
    gamma, beta = rng.standard_normal((2, 8)).astype(np.float32)
    ref = ConvNextV2GRN(8)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(gamma).reshape(1, 1, 1, 8))
        ref.bias.copy_(torch.from_numpy(beta).reshape(1, 1, 1, 8))
    xt = torch.from_numpy(x).requires_grad_()
    ref(xt).square().sum().backward()

    layer = GRN()
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        loss = tf.reduce_sum(tf.square(layer(xs)))
    grad = tape.gradient(loss, xs).numpy()
    assert np.all(np.isfinite(grad))
    assert_close(grad, xt.grad.numpy(), "GRN input gradient")


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch pads a copy
@pytest.mark.parametrize("kernel_size", [7, 4])
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_depthwise_conv_training_gradients_match_reference(kernel_size, policy):
    """The training path of the depthwise convolution (its kernel gradient written as a
    convolution) gives PyTorch's output and gradients: odd and even sizes, a batch of 3, an even
    kernel (asymmetric 'same' padding), and spatial sizes unknown when traced."""
    from convnext_tf.backbones.layers import DepthwiseConv

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 13, 10, 8)).astype(np.float32)
    kernel = rng.standard_normal((kernel_size, kernel_size, 8, 1)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    upstream = rng.standard_normal((3, 13, 10, 8)).astype(np.float32)  # loss: sum(y * upstream)

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
    wt = torch.from_numpy(kernel.transpose(2, 3, 0, 1).copy()).requires_grad_()  # (C, 1, kh, kw)
    bt = torch.from_numpy(bias).requires_grad_()
    yt = torch.nn.functional.conv2d(xt, wt, bt, padding="same", groups=8)
    (yt * torch.from_numpy(upstream.transpose(0, 3, 1, 2))).sum().backward()

    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        layer = DepthwiseConv(kernel_size, padding="same")
        layer.build((None, None, None, 8))
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    layer.set_weights([kernel, bias])

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 8))])
    def run(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = tf.cast(layer(inputs, training=True), tf.float32)
            loss = tf.reduce_sum(y * upstream)
        return (y, *tape.gradient(loss, [inputs, layer.depthwise_kernel, layer.bias]))

    y, dx, dkernel, dbias = (t.numpy() for t in run(tf.constant(x)))
    # float32: rounding alone; bfloat16: the output rounded once, the gradients in float32
    bound = 1e-4 if policy == "float32" else 1e-2
    assert_close(y, yt.detach().numpy().transpose(0, 2, 3, 1), f"{policy} output", bound)
    assert_close(dx, xt.grad.numpy().transpose(0, 2, 3, 1), f"{policy} input gradient", bound)
    assert_close(dkernel, wt.grad.numpy().transpose(2, 3, 0, 1), f"{policy} kernel gradient", bound)
    assert_close(dbias, bt.grad.numpy(), f"{policy} bias gradient", bound)
