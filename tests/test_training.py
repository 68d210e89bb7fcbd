"""Model Garden training of every registered experiment: short real runs on generated TFRecords.

Each run is Model Garden's own `train_lib.run_experiment(mode='train_and_eval')` on a ConvNeXt
with reduced widths, configured by a strict YAML override as a user's file would be.
"""
import math
import types
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from training_data import TINY_BACKBONE, overrides, write_all, write_yaml

from convnext_tf.backbones import ConvNeXtBackbone, create_model, save_weights
from convnext_tf.backbones.weights import CheckpointMismatchError
from convnext_tf.tasks import cli, init_checkpoint, records, train
from convnext_tf.tasks.experiments import EXPERIMENTS
from convnext_tf.tasks.segmentation import build_segmentation_model
from official.core import exp_factory, task_factory
from official.vision.dataloaders import tf_example_decoder

METRIC = {
    "convnext_seg_upernet_ade20k": "mean_iou", "convnext_seg_fpn": "mean_iou", "convnext_retinanet_coco": "AP",
    "convnext_maskrcnn_coco": "mask_AP", "convnext_imagenet": "accuracy",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_all(str(tmp_path_factory.mktemp("records")))


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n != "convnext_imagenet"])
def test_experiment_trains_and_evaluates(name, data, tmp_path):
    tf_keras.utils.set_random_seed(0)  # initial weights and drop path
    tf.summary.experimental.set_step(tf.Variable(7, dtype=tf.int64))  # as an earlier run in this process leaves it
    params = train.parse_config(name, [write_yaml(str(tmp_path / "small.yaml"), overrides(name, data))])
    assert params.task.model.backbone.convnext.dims == TINY_BACKBONE["dims"]  # the YAML reached the backbone
    model, _ = train.run(params, str(tmp_path / "run"), "train_and_eval")
    losses = [v for _, v in train.scalars(str(tmp_path / "run"))["training_loss"]]
    assert len(losses) == 6 and losses[-1] < 0.9 * losses[0], losses
    metric = train.scalars(str(tmp_path / "run"), "validation")[METRIC[name]][-1]
    assert metric[0] == 24 and math.isfinite(metric[1]) and metric[1] >= 0, metric
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-24")
    assert os.path.isfile(tmp_path / "run" / "params.yaml")
    if METRIC[name] == "mean_iou":  # every validation batch counts (Model Garden's own task drops the first)
        assert metric[1] == pytest.approx(mean_iou(model, params), rel=1e-5)


def mean_iou(model, params):
    """mIoU of the model on the validation batches: logits resized to the labels, ignored pixels left out,
    IoU = tp / (tp + fp + fn) per class (0 for a class absent from both), averaged over all classes."""
    task = task_factory.get_task(params.task)
    n = params.task.model.num_classes
    confusion = np.zeros((n, n))
    for images, labels in task.build_inputs(params.task.validation_data).take(params.trainer.validation_steps):
        masks = labels["masks"].numpy()[..., 0].astype(int)
        logits = tf.image.resize(model(images, training=False)["logits"], masks.shape[1:3])
        predicted = np.argmax(logits.numpy(), -1)
        valid = labels["valid_masks"].numpy()[..., 0] & (masks != params.task.losses.ignore_label)
        np.add.at(confusion, (masks[valid], predicted[valid]), 1)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return float(np.mean(np.where(union > 0, tp / np.maximum(union, 1), 0.0)))


def test_train_command_runs_an_experiment_end_to_end(data, tmp_path, capsys):
    yaml_file = write_yaml(str(tmp_path / "small.yaml"), overrides("convnext_imagenet", data))
    run = str(tmp_path / "run")
    cli.main(["train", "--experiment", "convnext_imagenet", "--config_file", yaml_file, "--model_dir", run,
              "--params_override", "task.model.backbone.convnext.drop_path_rate=0.1"])
    out = capsys.readouterr().out
    assert "convnext-tf train: convnext_imagenet finished" in out and '"accuracy"' in out
    losses = [v for _, v in train.scalars(run)["training_loss"]]
    assert losses[-1] < 0.9 * losses[0], losses
    assert tf.train.latest_checkpoint(run).endswith("ckpt-24")
    saved = open(os.path.join(run, "params.yaml")).read()
    assert "drop_path_rate: 0.1" in saved and "adamw_layer_decay" in saved


@pytest.mark.parametrize("argv, message", [
    (["--experiment", "convnext_segg"], "Unknown experiment 'convnext_segg'; the ConvNeXt experiments are: "
     "convnext_seg_upernet_ade20k, convnext_seg_fpn"),
    (["--experiment", "convnext_seg_fpn", "--params_override", "task.model.backbone.convnext.modle_id=atto"],
     "unknown key 'task.model.backbone.convnext.modle_id'; the keys of task.model.backbone.convnext are: depths, dims"),
    (["--experiment", "convnext_seg_fpn", "--config_file", "missing.yaml"], "--config_file missing.yaml: no such file"),
])
def test_train_command_names_what_is_wrong(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *argv, "--model_dir", str(tmp_path / "run")])
    assert exit_info.value.code == 1
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_yaml_file_keys_are_checked(tmp_path):
    bad = write_yaml(str(tmp_path / "bad.yaml"), {"task": {"model": {"decoder": {"upernet": {"chanels": 64}}}}})
    with pytest.raises(ValueError, match="unknown key 'task.model.decoder.upernet.chanels'; the keys of "
                                         "task.model.decoder.upernet are: channels, pool_scales"):
        train.parse_config("convnext_seg_upernet_ade20k", [bad])


def test_overrides_may_switch_a_one_of_config_to_another_choice():
    schedule = {"type": "cosine", "cosine": {"initial_learning_rate": 2e-3, "decay_steps": 10}}
    params = train.parse_config("convnext_retinanet_coco",  # its default schedule is stepwise
                                params_override={"trainer": {"optimizer_config": {"learning_rate": schedule}}})
    assert params.trainer.optimizer_config.learning_rate.type == "cosine"
    assert params.trainer.optimizer_config.learning_rate.cosine.decay_steps == 10
    with pytest.raises(ValueError, match="unknown key 'trainer.optimizer_config.learning_rate.cosin'; the keys of "
                                         "trainer.optimizer_config.learning_rate are: constant, cosine,"):
        train.parse_config("convnext_retinanet_coco",
                           params_override={"trainer": {"optimizer_config": {"learning_rate": {"cosin": {}}}}})


def _task_and_model(name, version="v2", **model_overrides):
    params = exp_factory.get_exp_config(name)
    params.override({"task": {"model": {"backbone": {"convnext": {"model_id": "atto", "version": version}},
                                        **model_overrides}}})
    return params, task_factory.get_task(params.task).build_model()


def _values(model):
    return {v.name: v.numpy() for v in model.variables}


def test_init_checkpoint_from_the_converter_restores_every_backbone_variable(tmp_path, capsys):
    source = create_model("convnextv2_atto", input_shape=(None, None, 3))
    for v in source.variables:  # not the initial values, which a fresh model shares
        v.assign(tf.random.stateless_normal(v.shape, seed=[len(v.name), 1]) * 0.1)
    save_weights(source, str(tmp_path / "atto.weights.h5"))
    out = str(tmp_path / "atto_mg")
    cli.main(["convert", str(tmp_path / "atto.weights.h5"), "--model", "convnextv2_atto", "--format", "model-garden",
              "--min-level", "3", "--out", out])
    assert "wrote" in capsys.readouterr().out
    params, model = _task_and_model("convnext_retinanet_coco")
    params.task.init_checkpoint = out
    task = task_factory.get_task(params.task)
    before = _values(model.backbone)
    task.initialize(model)
    expected = _values(source)
    restored = _values(model.backbone)
    backbone_vars = [n for n in restored if not n.startswith("output_norms")]
    assert len(backbone_vars) == len([n for n in expected if not n.startswith("head.")])
    for name in backbone_vars:
        np.testing.assert_array_equal(restored[name], expected[name], err_msg=name)
        assert not np.array_equal(before[name], expected[name]), name  # so the restore did change it
    # the same file for an experiment whose backbone also has level 2: the mismatch is named
    params, model = _task_and_model("convnext_seg_fpn")
    params.task.init_checkpoint = out
    with pytest.raises(CheckpointMismatchError, match=r"task\.model\.backbone\.convnext\.min_level is 2 in the "
                                                      r"experiment but 3 in the checkpoint"):
        task_factory.get_task(params.task).initialize(model)


def test_upernet_checkpoint_restores_backbone_and_decoder(tmp_path):
    seg = build_segmentation_model("convnext_atto", 150)
    for v in seg.variables:
        v.assign(tf.random.stateless_normal(v.shape, seed=[len(v.name), 2]) * 0.1)
    init_checkpoint.write(str(tmp_path / "upernet"), seg.backbone, seg.neck)
    params, model = _task_and_model("convnext_seg_upernet_ade20k", version="v1")
    params.task.init_checkpoint = str(tmp_path / "upernet")
    params.task.init_checkpoint_modules = "backbone,decoder"
    task_factory.get_task(params.task).initialize(model)
    for ours, theirs in ((model.backbone, seg.backbone), (model.decoder, seg.neck)):
        expected = _values(theirs)
        for name, value in _values(ours).items():
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
    # a narrower decoder, and a V2 backbone for a V1 checkpoint, are named
    params, model = _task_and_model("convnext_seg_upernet_ade20k", "v1", decoder={"upernet": {"channels": 64}})
    params.task.init_checkpoint = str(tmp_path / "upernet")
    params.task.init_checkpoint_modules = "backbone,decoder"
    with pytest.raises(CheckpointMismatchError, match=r"task\.model\.decoder\.upernet\.channels is 64 in the "
                                                      r"experiment but 512 in the checkpoint"):
        task_factory.get_task(params.task).initialize(model)
    params, model = _task_and_model("convnext_seg_upernet_ade20k", decoder={"upernet": {"channels": 64}})
    params.task.init_checkpoint = str(tmp_path / "upernet")
    params.task.init_checkpoint_modules = "backbone,decoder"
    with pytest.raises(CheckpointMismatchError, match=r"task\.model\.backbone\.convnext\.version is 'v2' in the "
                                                      r"experiment but 'v1' in the checkpoint"):
        task_factory.get_task(params.task).initialize(model)


def test_init_checkpoint_that_is_a_keras_file_is_explained(tmp_path):
    backbone = ConvNeXtBackbone("atto")
    save_weights(backbone, str(tmp_path / "atto.weights.h5"))
    params, model = _task_and_model("convnext_seg_fpn")
    params.task.init_checkpoint = str(tmp_path / "atto.weights.h5")
    with pytest.raises(ValueError, match="is not a TensorFlow checkpoint .*--format model-garden"):
        task_factory.get_task(params.task).initialize(model)


@pytest.mark.parametrize("argv, message", [
    (["--format", "model-garden"], "--format model-garden needs --out DIR"),
    (["--format", "model-garden", "--out", "FILE"], "is a file; a Model Garden checkpoint is a folder"),
    (["--format", "model-garden", "--out", "DIR", "--min-level", "6"], "min_level must be an integer in 2..5; got 6"),
])
def test_model_garden_conversion_names_what_is_wrong(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_weights(create_model("convnext_atto"), "atto.weights.h5")
    (tmp_path / "FILE").write_text("x")
    with pytest.raises(SystemExit):
        cli.main(["convert", "atto.weights.h5", "--model", "convnext_atto", *argv])
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "DIR")


def test_converter_replaces_an_old_checkpoint_folder_whole(tmp_path):
    out = str(tmp_path / "mg")
    first = init_checkpoint.write(out, ConvNeXtBackbone("atto", min_level=3))
    second = init_checkpoint.write(out, ConvNeXtBackbone("atto"))
    assert first == second == tf.train.latest_checkpoint(out)
    assert init_checkpoint.read_structure(out)["backbone"]["min_level"] == 2
    assert sorted(os.listdir(tmp_path)) == ["mg"]  # no temporary folder left


def test_records_are_what_model_garden_decodes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (37, 53, 3)).astype(np.uint8)
    masks = np.zeros((2, 37, 53), np.uint8)
    masks[0, :10, :20] = masks[1, 20:, 30:] = 1
    boxes = np.array([[0, 0, 10, 20], [20, 30, 37, 53]], np.float32)
    example = records.detection_example(image, boxes, [3, 1], masks, source_id=7).SerializeToString()
    decoded = tf_example_decoder.TfExampleDecoder(include_mask=True).decode(tf.constant(example))
    assert int(decoded["source_id"]) == 7 and decoded["image"].shape == (37, 53, 3)
    np.testing.assert_allclose(decoded["groundtruth_boxes"].numpy(), boxes / [37, 53, 37, 53], rtol=1e-6)
    assert decoded["groundtruth_classes"].numpy().tolist() == [3, 1]
    np.testing.assert_array_equal(decoded["groundtruth_instance_masks"].numpy(), masks)
    with pytest.raises(ValueError, match="2 boxes, 1 classes and 2 masks"):
        records.detection_example(image, boxes, [3], masks)
    label = rng.integers(0, 4, (37, 53)).astype(np.uint8)
    parsed = tf.io.parse_single_example(records.segmentation_example(image, label).SerializeToString(), {
        "image/segmentation/class/encoded": tf.io.FixedLenFeature((), tf.string)})
    np.testing.assert_array_equal(tf.io.decode_png(parsed["image/segmentation/class/encoded"])[..., 0], label)


def test_init_checkpoint_modules_that_the_checkpoint_lacks_are_named(tmp_path):
    backbone = ConvNeXtBackbone("atto")
    path = str(tmp_path / "mg")
    init_checkpoint.write(path, backbone)
    model = types.SimpleNamespace(backbone=backbone, decoder=None)
    init_checkpoint.check(path, model, "backbone")  # fits
    with pytest.raises(CheckpointMismatchError, match="holds only backbone, not a whole model: set "
                                                      "init_checkpoint_modules to 'backbone'"):
        init_checkpoint.check(path, model, "all")
    with pytest.raises(CheckpointMismatchError, match="has no decoder"):
        init_checkpoint.check(path, model, ["backbone", "decoder"])
