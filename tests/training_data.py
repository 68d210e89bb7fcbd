"""Small generated TFRecords in Model Garden's formats, and YAML that points the experiments at them."""
from __future__ import annotations

import os

import numpy as np
import yaml

from convnext_tf.tasks import records

COLOURS = np.array([[0, 0, 0], [230, 40, 40], [40, 200, 60], [40, 80, 230]], np.uint8)
TINY_BACKBONE = {"model_id": "atto", "version": "v2", "depths": [1, 1, 2, 1], "dims": [16, 32, 48, 64]}


def _scene(rng, h, w, n_objects):
    """A noisy background with filled rectangles of classes 1..3: image, label map, boxes, classes, masks."""
    image = rng.integers(90, 160, (h, w, 3)).astype(np.uint8)
    label = np.zeros((h, w), np.uint8)
    boxes, classes, masks = [], [], []
    for _ in range(n_objects):
        c = int(rng.integers(1, 4))
        bh, bw = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 4, w // 2))
        y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        image[y:y + bh, x:x + bw] = COLOURS[c]
        label[y:y + bh, x:x + bw] = c
        mask = np.zeros((h, w), np.uint8)
        mask[y:y + bh, x:x + bw] = 1
        boxes.append([y, x, y + bh, x + bw])
        classes.append(c)
        masks.append(mask)
    return image, label, np.array(boxes, np.float32), classes, np.array(masks)


def write_all(folder: str, n_train: int = 24, n_val: int = 8) -> dict:
    """Classification, segmentation and detection records (train and val) and a COCO file; their paths."""
    rng = np.random.default_rng(0)
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        seg, det, cls, coco = [], [], [], []
        for i in range(n):
            image, label, boxes, classes, masks = _scene(rng, 80, 112, 2)
            seg.append(records.segmentation_example(image, label, source_id=i + 1))
            image, _, boxes, classes, masks = _scene(rng, 128, 128, 2)
            det.append(records.detection_example(image, boxes, classes, masks, source_id=i + 1))
            coco.append((i + 1, 128, 128, boxes, classes, masks))
            c = int(rng.integers(0, 3))
            image = np.full((64, 64, 3), COLOURS[c + 1], np.uint8)
            image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
            cls.append(records.classification_example(image, c, source_id=i + 1))
        for kind, examples in (("seg", seg), ("det", det), ("cls", cls)):
            paths[f"{kind}_{split}"] = os.path.join(folder, f"{kind}-{split}.tfrecord")
            records.write_records(paths[f"{kind}_{split}"], examples)
        if split == "val":
            paths["coco_val"] = os.path.join(folder, "det-val.json")
            records.write_json(paths["coco_val"], records.coco_annotations(coco, num_classes=4))
    return paths


def _trainer(steps: int) -> dict:
    return {
        "train_steps": steps, "validation_steps": 2, "validation_interval": steps, "steps_per_loop": 4,
        "summary_interval": 4, "checkpoint_interval": steps,
        "optimizer_config": {
            "optimizer": {"adamw_layer_decay": {"weight_decay": 0.0}},
            "warmup": {"linear": {"warmup_steps": 2}},
        },
    }


def overrides(experiment: str, paths: dict, steps: int = 24) -> dict:
    """The strict YAML overrides of a small CPU run of `experiment` on the records of `write_all`."""
    runtime = {"distribution_strategy": "one_device", "num_gpus": 0, "mixed_precision_dtype": "float32"}
    norm = {"use_sync_bn": False}
    if experiment.startswith("convnext_seg"):
        data = {"global_batch_size": 4, "output_size": [80, 112], "aug_scale_min": 1.0, "aug_scale_max": 1.0,
                "shuffle_buffer_size": 8, "seed": 0}
        decoder = {"upernet": {"channels": 32}} if "upernet" in experiment else {"exact_fpn": {"num_filters": 32}}
        task = {
            "init_checkpoint": None,
            "model": {"num_classes": 4, "input_size": [80, 112, 3], "backbone": {"convnext": TINY_BACKBONE},
                      "decoder": decoder, "head": {"num_filters": 32}, "aux_head": {"num_filters": 16},
                      "norm_activation": norm},
            "train_data": {**data, "input_path": paths["seg_train"]},
            "validation_data": {**data, "input_path": paths["seg_val"], "is_training": False, "drop_remainder": False,
                                "resize_eval_groundtruth": True, "groundtruth_padded_size": []},
        }
        trainer = _trainer(steps)
        trainer.update(best_checkpoint_export_subdir="", best_checkpoint_eval_metric="")
        schedule = {"type": "polynomial", "polynomial": {"initial_learning_rate": 2e-3, "decay_steps": steps}}
    elif experiment.startswith("convnext_retinanet") or experiment.startswith("convnext_maskrcnn"):
        data = {"global_batch_size": 4, "shuffle_buffer_size": 8, "seed": 0,
                "parser": {"aug_scale_min": 1.0, "aug_scale_max": 1.0}}
        model = {"num_classes": 4, "input_size": [128, 128, 3], "backbone": {"convnext": TINY_BACKBONE},
                 "decoder": {"exact_fpn": {"num_filters": 32}}, "norm_activation": norm}
        if "retinanet" in experiment:
            model["head"] = {"num_convs": 1, "num_filters": 32}
        else:
            model.update(rpn_head={"num_filters": 32}, detection_head={"num_filters": 32, "fc_dims": 64},
                         mask_head={"num_filters": 32}, roi_sampler={"num_sampled_rois": 64},
                         mask_sampler={"num_sampled_masks": 32})
        task = {
            "init_checkpoint": None, "annotation_file": paths["coco_val"], "model": model,
            "train_data": {**data, "input_path": paths["det_train"]},
            "validation_data": {**data, "input_path": paths["det_val"], "is_training": False},
        }
        trainer = _trainer(steps)
        schedule = {"type": "stepwise", "stepwise": {"boundaries": [steps], "values": [1e-3, 1e-4]}}
    elif experiment == "convnext_imagenet":
        data = {"global_batch_size": 8, "shuffle_buffer_size": 8, "seed": 0, "aug_type": None, "random_erasing": None,
                "mixup_and_cutmix": None, "aug_crop": False}
        task = {
            "init_checkpoint": None,
            "model": {"num_classes": 3, "input_size": [64, 64, 3], "backbone": {"convnext": TINY_BACKBONE}},
            "losses": {"one_hot": True, "label_smoothing": 0.0},
            "train_data": {**data, "input_path": paths["cls_train"]},
            "validation_data": {**data, "input_path": paths["cls_val"], "is_training": False},
        }
        trainer = _trainer(steps)
        schedule = {"type": "cosine", "cosine": {"initial_learning_rate": 2e-3, "decay_steps": steps, "alpha": 0.0}}
    else:
        raise KeyError(experiment)
    trainer["optimizer_config"]["learning_rate"] = schedule
    return {"runtime": runtime, "task": task, "trainer": trainer}


def write_yaml(path: str, content: dict) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(content, f)
    return path
