"""mixed_float16 and mixed_bfloat16: float32 variables and logits, float32 norms, no overflow."""
import numpy as np
import pytest
import tf_keras
from reference import hf_classifier

from convnext_tf.backbones import ConvNeXtConfig, create_model, load_state_dict, stage_output_names

# Tolerance on max |mixed - float32| relative to max |float32| for logits and stage outputs:
# 5 machine epsilons of the compute dtype (float16 2**-10, bfloat16 2**-7). Measured on random
# weights: at most 2.1e-3 and 1.4e-2 on stage outputs (the residual stream is in the compute
# dtype), 2.8e-4 and 2.5e-3 on logits.
TOLERANCE = {"mixed_float16": 5 * 2.0**-10, "mixed_bfloat16": 5 * 2.0**-7}


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
