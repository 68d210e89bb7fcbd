"""RetinaNet and Mask R-CNN from Model Garden on ConvNeXt: forward at two sizes, a short training run."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.vision.configs import retinanet as retinanet_cfg
from official.vision.ops import anchor
from official.vision.tasks.retinanet import RetinaNetTask
from reference import TINY_DEPTHS, TINY_DIMS

from convnext_tf.backbones import ConvNeXtBackbone
from convnext_tf.tasks import detection

TINY = dict(depths=list(TINY_DEPTHS), dims=list(TINY_DIMS))  # a small custom backbone: behaviour, not parity


@pytest.mark.parametrize("h,w", [(640, 640), (384, 512)])
def test_retinanet_forward(h, w):
    config = detection.retinanet_config("atto", num_classes=4, num_filters=32, **TINY)
    model = detection.build_retinanet(config)
    assert isinstance(model.backbone, ConvNeXtBackbone)
    out = detection.detect(model, config, np.random.default_rng(0).uniform(-1, 1, (1, h, w, 3)))
    n = out["detection_boxes"].shape[1]
    assert out["detection_boxes"].shape == (1, n, 4)
    assert out["detection_scores"].shape == out["detection_classes"].shape == (1, n)
    assert out["num_detections"].shape == (1,)


@pytest.mark.parametrize("h,w", [(640, 640), (384, 512)])
def test_maskrcnn_forward(h, w):
    config = detection.maskrcnn_config("atto", version="v2", num_classes=3, num_filters=32, **TINY)
    model = detection.build_maskrcnn(config)
    out = detection.detect(model, config, np.random.default_rng(0).uniform(-1, 1, (1, h, w, 3)))
    n = out["detection_boxes"].shape[1]
    assert out["detection_boxes"].shape == (1, n, 4)
    assert out["detection_scores"].shape == out["detection_classes"].shape == (1, n)
    assert out["detection_masks"].shape[:2] == (1, n)


def test_anchor_size_error():
    config = detection.retinanet_config("atto")
    with pytest.raises(ValueError, match="multiples of 128.*384x512"):
        detection.anchor_boxes(config, 375, 500)


def test_retinanet_training_with_model_garden_losses():
    tf.random.set_seed(0)
    config = detection.retinanet_config("atto", num_classes=3, num_filters=32, **TINY)
    task = RetinaNetTask(retinanet_cfg.RetinaNetTask(model=config))
    model = detection.build_retinanet(config)
    h = w = 256
    images = tf.random.uniform((2, h, w, 3), -1, 1, seed=0)
    boxes = tf.constant([[32.0, 40.0, 160.0, 200.0], [100.0, 20.0, 220.0, 120.0]])  # ymin, xmin, ymax, xmax
    classes = tf.constant([[1], [2]])
    anchors = anchor.Anchor(min_level=3, max_level=7, num_scales=config.anchor.num_scales,
                            aspect_ratios=config.anchor.aspect_ratios, anchor_size=config.anchor.anchor_size,
                            image_size=(h, w)).multilevel_boxes
    cls_t, box_t, _, cls_w, box_w = anchor.AnchorLabeler(0.5, 0.5).label_anchors(anchors, boxes, classes)
    labels = {k: tf.nest.map_structure(lambda t: tf.stack([t, t]), v) for k, v in
              {"cls_targets": cls_t, "box_targets": box_t, "cls_weights": cls_w, "box_weights": box_w}.items()}
    optimizer = tf_keras.optimizers.Adam(1e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            loss = task.build_losses(outputs, labels)[0]  # (total_loss, cls_loss, box_loss, model_loss)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    losses = [float(step()) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses[::6]


def test_maskrcnn_training_with_model_garden_losses():
    from official.vision.configs import maskrcnn as maskrcnn_cfg
    from official.vision.tasks.maskrcnn import MaskRCNNTask

    tf.random.set_seed(0)
    config = detection.maskrcnn_config("atto", num_classes=3, num_filters=32, **TINY)
    # small heads and samples keep the test fast; the losses are Model Garden's all the same
    config.rpn_head.num_filters = config.detection_head.num_filters = config.mask_head.num_filters = 32
    config.detection_head.fc_dims = 64
    config.roi_sampler.num_sampled_rois = 64
    config.mask_sampler.num_sampled_masks = 16
    task = MaskRCNNTask(maskrcnn_cfg.MaskRCNNTask(model=config))
    model = detection.build_maskrcnn(config)
    b, h, w = 2, 256, 256
    images = tf.random.uniform((b, h, w, 3), -1, 1, seed=0)
    boxes = tf.constant([[32.0, 40.0, 160.0, 200.0], [100.0, 20.0, 220.0, 120.0]])
    classes = tf.constant([1, 2])
    anchors = anchor.Anchor(min_level=2, max_level=6, num_scales=config.anchor.num_scales,
                            aspect_ratios=config.anchor.aspect_ratios, anchor_size=config.anchor.anchor_size,
                            image_size=(h, w)).multilevel_boxes
    score_t, box_t = anchor.RpnAnchorLabeler(0.7, 0.3, 256, 0.5).label_anchors(
        anchors, boxes, tf.cast(classes[:, None], tf.float32))
    batch = lambda t: tf.stack([t] * b)  # noqa: E731
    labels = {"rpn_score_targets": tf.nest.map_structure(batch, score_t),
              "rpn_box_targets": tf.nest.map_structure(batch, box_t)}
    # masks cropped to their boxes and resized to 112x112, as Model Garden's parser gives them
    yy, xx = np.mgrid[:112, :112]
    ellipse = (((yy - 55.5) / 56) ** 2 + ((xx - 55.5) / 56) ** 2 <= 1).astype(np.float32)
    kwargs = dict(image_shape=tf.constant([[h, w]] * b, tf.float32), anchor_boxes=tf.nest.map_structure(batch, anchors),
                  gt_boxes=batch(boxes), gt_classes=batch(classes), gt_masks=batch(tf.stack([ellipse, ellipse])))
    optimizer = tf_keras.optimizers.Adam(1e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = model(images, training=True, **kwargs)
            loss = task.build_losses(outputs, labels)["total_loss"]
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    losses = [float(step()) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_batched_nms_keeps_model_gardens_v2_detections():
    """Our default NMS against Model Garden's default, on one set of weights, with many boxes over the threshold."""
    tf.random.set_seed(0)
    config = detection.retinanet_config("atto", num_classes=4, num_filters=32, **TINY)
    assert config.detection_generator.nms_version == "batched"
    ours = detection.build_retinanet(config)
    stock = detection.retinanet_config("atto", num_classes=4, num_filters=32, **TINY)
    stock.detection_generator.nms_version = "v2"  # Model Garden's default
    reference = detection.build_retinanet(stock)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 256, 384, 3))
    # scores spread widely (logits' deviation 2), 10% of the boxes over the threshold, instead of all
    # at the prior's 0.01: near-equal scores would make the choice at the cut of 100 detections a tie
    kernel = next(v for v in ours.trainable_variables if v.name.startswith("retina_net_head/scores/kernel"))
    bias = next(v for v in ours.trainable_variables if v.name.startswith("retina_net_head/scores/bias"))
    kernel.assign(tf.random.normal(kernel.shape, stddev=0.1, seed=1))
    bias.assign(tf.zeros_like(bias))

    def logits():
        raw = ours(tf.constant(images, tf.float32), image_shape=tf.constant([[256.0, 384.0]] * 2),
                   anchor_boxes=detection.anchor_boxes(config, 256, 384, 2), training=False)["cls_outputs"]
        return np.concatenate([v.numpy().ravel() for v in raw.values()])

    kernel.assign(kernel * 2 / np.std(logits()))
    bias.assign(tf.fill(bias.shape, np.float32(np.log(0.05 / 0.95) - np.quantile(logits(), 0.9))))
    reference.set_weights(ours.get_weights())
    got, want = detection.detect(ours, config, images), detection.detect(reference, stock, images)
    n = want["num_detections"].numpy()
    assert n.min() > 20  # many detections, so the comparison means something
    assert want["detection_scores"].numpy().max() > 0.5  # and spread scores
    np.testing.assert_array_equal(got["num_detections"].numpy(), n)
    for i in range(len(n)):  # the same detections, in any order: sorted by class, then box (pixels, to 0.1)
        rows = [np.column_stack([d["detection_scores"][i, : n[i]], d["detection_classes"][i, : n[i]],
                                 d["detection_boxes"][i, : n[i]]]).astype(np.float64) for d in (got, want)]
        rows = [r[np.lexsort(np.round(r[:, 1:], 1).T[::-1])] for r in rows]  # independent of the output order
        np.testing.assert_allclose(rows[0], rows[1], rtol=1e-5, atol=1e-4)


def test_detect_is_compiled_once_per_image_size():
    config = detection.retinanet_config("atto", num_classes=3, num_filters=32, **TINY)
    model = detection.build_retinanet(config)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 256, 256, 3))
    first = detection.detect(model, config, images)
    again = detection.detect(model, config, images)
    detection.detect(model, config, images[:, :128])
    assert detection._compiled(model, config).experimental_get_tracing_count() == 2  # two sizes, two traces
    eager = model(tf.constant(images, tf.float32), image_shape=tf.constant([[256.0, 256.0]]),
                  anchor_boxes=detection.anchor_boxes(config, 256, 256), training=False)
    for key in ("detection_boxes", "detection_scores", "num_detections"):
        np.testing.assert_array_equal(again[key].numpy(), first[key].numpy())
        np.testing.assert_allclose(first[key].numpy(), eager[key].numpy(), rtol=1e-4, atol=1e-4)
