"""mixed_float16 and mixed_bfloat16: float32 variables and logits, float32 norms, no overflow."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import torch
from reference import hf_classifier

from convnext_tf.backbones import (
    ConvNeXtBackbone,
    ConvNeXtConfig,
    create_model,
    inference_function,
    load_state_dict,
    stage_output_names,
)

# Tolerance on max |mixed - float32| relative to max |float32| for logits and stage outputs:
# 5 machine epsilons of the compute dtype (float16 2**-10, bfloat16 2**-7). Measured on random
# weights: at most 2.1e-3 and 1.4e-2 on stage outputs (the residual stream is in the compute
# dtype), 2.8e-4 and 2.5e-3 on logits.
TOLERANCE = {"mixed_float16": 5 * 2.0**-10, "mixed_bfloat16": 5 * 2.0**-7}
# oneDNN's float16 layer norm needs AVX512-FP16 (Sapphire Rapids and later)
FLOAT16_NORMS_FUSE = "avx512_fp16" in (open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else [])


def outputs(name, sd, x):
    model = create_model(name, input_shape=(None, None, 3))
    load_state_dict(model, sd)
    stages = [model.get_layer(n).output for n in stage_output_names(ConvNeXtConfig.from_name(name))]
    return model, [t.numpy() for t in tf_keras.Model(model.inputs, stages + [model.output])(x)]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto", "convnext_tiny", "convnextv2_tiny"])
def test_mixed_matches_float32(name, policy):
    sd = hf_classifier(name).state_dict()
    x = np.random.default_rng(0).standard_normal((2, 160, 192, 3)).astype(np.float32)
    _, expected = outputs(name, sd, x)
    tf_keras.mixed_precision.set_global_policy(policy)
    model, got = outputs(name, sd, x)
    assert {w.dtype.name for w in model.weights} == {"float32"}
    compute = policy.split("_")[1]
    assert model.get_layer("stages.1.blocks.0.pwconv1").output.dtype.name == compute
    assert model.get_layer("stages.1.blocks.0.norm").compute_dtype == compute  # float32 inside, see layers.py
    assert model.output.dtype.name == "float32" and got[-1].dtype == np.float32
    for what, a, b in zip(["stage 0", "stage 1", "stage 2", "stage 3", "logits"], got, expected):
        err = np.max(np.abs(a.astype(np.float32) - b)) / np.max(np.abs(b))
        assert err <= TOLERANCE[policy], f"{name} {policy} {what}: relative error {err:.3g}"


@pytest.mark.parametrize("name", ["convnextv2_atto", pytest.param("convnextv2_tiny", marks=pytest.mark.slow)])
def test_v2_at_1024_in_float16_is_finite(name):
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    model = create_model(name, input_shape=(None, None, 3))
    load_state_dict(model, hf_classifier(name).state_dict())
    probe = tf_keras.Model(model.inputs, [model.get_layer("stages.0.blocks.0.grn").input, model.output])
    x = np.random.default_rng(0).standard_normal((1, 1024, 1024, 3)).astype(np.float32)
    grn_in, logits = probe(x)
    # The test is meaningful: GRN's sum of squares over H x W is beyond float16's range (65504).
    assert np.max(np.sum(np.square(grn_in.numpy().astype(np.float32)), axis=(1, 2))) > 65504
    assert np.isfinite(logits.numpy()).all()


def variable_casts(function, x):
    """Cast ops in the traced graph whose input is a variable read."""
    graph = function.get_concrete_function(x).graph
    return [op for op in graph.get_operations()
            if op.type == "Cast" and op.inputs[0].op.type == "ReadVariableOp"]


def fused_norms(function, x):
    """oneDNN layer norm ops in the traced graph."""
    return [op for op in function.get_concrete_function(x).graph.get_operations() if op.type == "_MklLayerNorm"]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
def test_inference_function_casts_once_and_keeps_the_bounds(name, policy):
    sd = hf_classifier(name).state_dict()
    x = np.random.default_rng(0).standard_normal((2, 160, 192, 3)).astype(np.float32)
    _, expected = outputs(name, sd, x)
    tf_keras.mixed_precision.set_global_policy(policy)
    model = create_model(name, input_shape=(None, None, 3))
    load_state_dict(model, sd)
    plain = tf.function(lambda images: model(images, training=False))
    assert len(variable_casts(plain, x)) > 50  # what it removes: every kernel, bias and scale
    run = inference_function(model)
    assert variable_casts(run, x) == []
    # lower-precision kernels are graph constants in the compute dtype, which oneDNN packs once
    kernel = model.get_layer("stages.3.blocks.0.pwconv1").kernel.shape  # (the head computes in float32)
    function = run.get_concrete_function(x)
    assert {op.outputs[0].dtype for op in function.graph.get_operations()
            if op.type == "Const" and op.outputs[0].shape == kernel} == {tf.as_dtype(policy.split("_")[1])}
    assert kernel not in [t.shape for t in function.captured_inputs]
    norms = [layer for layer in model.layers if type(layer).__name__ == "LayerNorm"]
    # every LayerNorm runs as one fused op, but in float16 on a CPU without AVX512-FP16
    assert len(fused_norms(run, x)) == sum(norm.compute_dtype != "float16" or FLOAT16_NORMS_FUSE for norm in norms)
    got = run(x).numpy()
    err = np.max(np.abs(got - expected[-1])) / np.max(np.abs(expected[-1]))
    assert err <= TOLERANCE[policy], f"{name} {policy}: relative error {err:.3g}"
    # the model is untouched: its weights are still float32 variables, and a new function sees new weights
    assert all(isinstance(getattr(model.get_layer(n), "kernel"), tf.Variable) for n in ("stem.conv", "head.fc"))
    fc = model.get_layer("head.fc")
    fc.bias.assign(fc.bias + 1.0)
    np.testing.assert_allclose(inference_function(model)(x).numpy(), got + 1.0, rtol=0, atol=1e-2)


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
def test_inference_function_in_float32_keeps_parity_with_hugging_face(name):
    ref = hf_classifier(name)
    model = create_model(name, input_shape=(None, None, 3))
    load_state_dict(model, ref.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 96, 128, 3)).astype(np.float32)
    run = inference_function(model)
    function = run.get_concrete_function(x)
    ops = function.graph.get_operations()
    assert not [op for op in ops if op.type == "ReadVariableOp"]
    # float32 weights are captured tensors, not graph constants (TensorFlow copies those with the graph)
    head = model.get_layer("head.fc").kernel.shape
    assert head in [t.shape for t in function.captured_inputs]
    assert head not in [op.outputs[0].shape for op in ops if op.type == "Const"]
    assert len(fused_norms(run, x)) == len([l for l in model.layers if type(l).__name__ == "LayerNorm"])
    # V1's layer scales are folded into pwconv2: no op of theirs is left (HF's layer scales are random)
    assert not [op for op in ops if ".layer_scale/" in op.name]
    assert any(".layer_scale" in l.name for l in model.layers) == (name == "convnext_atto")
    with torch.no_grad():
        expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy()
    got = run(x).numpy()
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))  # the parity tests allow 1e-4
    backbone = ConvNeXtBackbone("atto", version="v2" if "v2" in name else "v1")
    got, want = inference_function(backbone)(x), backbone(x, training=False)
    assert sorted(got) == ["2", "3", "4", "5"]
    for level in got:
        np.testing.assert_allclose(got[level].numpy(), want[level].numpy(), rtol=0, atol=1e-5 * np.max(np.abs(want[level])))
