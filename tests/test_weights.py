"""Loading the official, timm and Hugging Face formats, from memory and from files; strictness."""
import sys

import numpy as np
import pytest
import tf_keras
import torch
from reference import hf_classifier, hf_to_official, hf_to_timm

from convnext_tf.backbones import CheckpointMismatchError, CheckpointReadError, create_model, load_state_dict, save_weights

X = np.random.default_rng(1).standard_normal((2, 64, 96, 3)).astype(np.float32)


def ref_logits(ref):
    with torch.no_grad():
        return ref(torch.from_numpy(X.transpose(0, 3, 1, 2))).logits.numpy()


def assert_logits(model, ref):
    expected = ref_logits(ref)
    err = np.max(np.abs(model(X, training=False).numpy() - expected))
    assert err <= 1e-4 * np.max(np.abs(expected))


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto", "convnext_tiny", "convnextv2_tiny"])
@pytest.mark.parametrize("fmt", ["official", "timm", "hf"])
def test_formats_match_reference(name, fmt):
    ref = hf_classifier(name, seed=3)
    sd = ref.state_dict()
    conv_mlp = name.endswith("atto")  # timm builds atto..nano with 1x1-conv MLPs
    sd = {"official": hf_to_official, "timm": lambda s: hf_to_timm(s, conv_mlp), "hf": dict}[fmt](sd)
    model = create_model(name, input_shape=(None, None, 3))
    load_state_dict(model, sd)
    assert_logits(model, ref)


def test_files_pth_safetensors_h5(tmp_path):
    from safetensors.torch import save_file

    ref = hf_classifier("convnextv2_atto", seed=4)
    torch.save(hf_to_official(ref.state_dict()), tmp_path / "official.pth")
    save_file(hf_to_timm(ref.state_dict(), conv_mlp=True), tmp_path / "timm.safetensors")
    for path in ("official.pth", "timm.safetensors"):
        model = create_model("convnextv2_atto", input_shape=(None, None, 3), weights=str(tmp_path / path))
        assert_logits(model, ref)
    save_weights(model, tmp_path / "ours.weights.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["official.pth", "ours.weights.h5", "timm.safetensors"]
    again = create_model("convnextv2_atto", input_shape=(None, None, 3), weights=str(tmp_path / "ours.weights.h5"))
    assert_logits(again, ref)
    # A Keras file of a classifier loads into a headless model too.
    headless = create_model("convnextv2_atto", include_top=False, weights=str(tmp_path / "ours.weights.h5"))
    np.testing.assert_array_equal(headless.get_layer("stem.conv").kernel.numpy(), model.get_layer("stem.conv").kernel.numpy())


def test_pth_without_torch_is_read_with_numpy(tmp_path, monkeypatch):
    """Issue 9: .pth files no longer need torch (they used to raise an ImportError without it)."""
    torch.save(hf_to_official(hf_classifier("convnext_atto").state_dict()), tmp_path / "good.pth")
    (tmp_path / "w.pth").write_bytes(b"0")
    monkeypatch.setitem(sys.modules, "torch", None)
    create_model("convnext_atto", weights=str(tmp_path / "good.pth"))
    with pytest.raises(CheckpointReadError, match=r"w\.pth as a PyTorch checkpoint: it is not a zip archive"):
        create_model("convnext_atto", weights=str(tmp_path / "w.pth"))


def test_headless_model_skips_head():
    ref = hf_classifier("convnext_atto")
    model = create_model("convnext_atto", include_top=False)
    result = load_state_dict(model, hf_to_official(ref.state_dict()))
    assert sorted(result.skipped) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert not result.missing and not result.unexpected


def snapshot(model):
    return [w.copy() for w in model.get_weights()]


def unchanged(model, before):
    return all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_other_variant_names_first_mismatch_and_loads_nothing():
    model = create_model("convnext_femto")
    before = snapshot(model)
    sd = hf_to_official(hf_classifier("convnext_atto").state_dict())
    with pytest.raises(CheckpointMismatchError) as e:
        load_state_dict(model, sd)
    msg = str(e.value)
    assert "downsample_layers.0.0.weight" in msg and "(40, 3, 4, 4)" in msg and "(4, 4, 3, 48)" in msg
    assert "nothing was loaded" in msg
    assert unchanged(model, before)


def test_other_depth_lists_missing_keys():
    tiny = create_model("convnext_tiny")
    before = snapshot(tiny)
    sd = hf_classifier("convnext_small").state_dict()  # small = tiny with 27 blocks in stage 2
    with pytest.raises(CheckpointMismatchError, match="unexpected in the checkpoint: convnext.encoder.stages.2.layers.9"):
        load_state_dict(tiny, sd)
    assert unchanged(tiny, before)
    small = create_model("convnext_small")
    sd_tiny = hf_classifier("convnext_tiny").state_dict()
    with pytest.raises(CheckpointMismatchError, match=r"missing in the checkpoint: stages\.2\.blocks\.9\."):
        load_state_dict(small, sd_tiny)


def test_v1_checkpoint_into_v2_model():
    model = create_model("convnextv2_atto")
    with pytest.raises(CheckpointMismatchError, match="grn"):
        load_state_dict(model, hf_classifier("convnext_atto").state_dict())


def test_22k_head_reported_or_skipped():
    ref = hf_classifier("convnext_atto", num_labels=21841)
    model = create_model("convnext_atto", input_shape=(None, None, 3))
    before = snapshot(model)
    with pytest.raises(CheckpointMismatchError, match="skip_head=True"):
        load_state_dict(model, ref.state_dict())
    assert unchanged(model, before)
    result = load_state_dict(model, ref.state_dict(), skip_head=True)
    assert set(result.skipped) == {"classifier.weight", "classifier.bias"}
    np.testing.assert_array_equal(model.get_layer("head.fc").kernel.numpy(), before[-2])
    # everything below the classifier equals the reference's pooled, normalised features
    pooled = tf_keras.Model(model.inputs, model.get_layer("head.norm").output)(X[:, :64, :64])
    with torch.no_grad():
        ref_pooled = ref.convnext(torch.from_numpy(X[:, :64, :64].transpose(0, 3, 1, 2))).pooler_output.numpy()
    assert np.max(np.abs(pooled.numpy() - ref_pooled)) <= 1e-4 * np.max(np.abs(ref_pooled))


def test_non_strict_loads_what_fits():
    model = create_model("convnext_atto")
    sd = dict(hf_classifier("convnext_atto").state_dict())
    sd["convnext.encoder.stages.0.layers.0.extra.weight"] = torch.zeros(3)
    del sd["classifier.bias"]
    with pytest.raises(CheckpointMismatchError, match="extra"):
        load_state_dict(model, sd)
    result = load_state_dict(model, sd, strict=False)
    assert result.unexpected == ["convnext.encoder.stages.0.layers.0.extra.weight"]
    assert result.missing == ["head.fc/bias"]


def test_unknown_format_and_extension(tmp_path):
    with pytest.raises(ValueError, match="Unrecognised checkpoint format"):
        load_state_dict(create_model("convnext_atto"), {"foo.weight": np.zeros(3)})
    (tmp_path / "w.npz").write_bytes(b"0")
    with pytest.raises(ValueError, match=r"Unsupported checkpoint file .*w\.npz"):
        create_model("convnext_atto", weights=str(tmp_path / "w.npz"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_model("convnext_atto", weights=str(tmp_path / "missing.pth"))
