"""Model Garden experiments, tasks and the layer-decay optimizer for ConvNeXt.

Registered names (`exp_factory.get_exp_config(name)`, `convnext-tf train --experiment name`):

- `convnext_seg_upernet_ade20k`: UperNet + auxiliary FCN head (loss weight 0.4), the official
  ADE20K recipe: AdamW lr 1e-4, weight decay 0.05, stage-wise decay 0.9 over 6 layers (tiny),
  poly schedule with 1500 warm-up steps, 160k steps of 16 images at 512x512, drop path 0.4.
- `convnext_seg_fpn`: our FPN with Semantic FPN's fusion of every level (at their exact sizes, so
  any input size works), ADE20K's settings and the same optimizer.
- `convnext_retinanet_coco`, `convnext_maskrcnn_coco`: our FPN, the official Mask R-CNN recipe
  (AdamW lr 1e-4, weight decay 0.05, layer-wise decay 0.95 over 6 layers, 3x schedule with
  steps at epochs 27 and 33, 16 images per step, drop path 0.4).
- `convnext_imagenet`: ConvNeXt V2 fine-tuning (AdamW, lr 8e-4 x batch / 256, 'single' layer
  decay 0.9, weight decay 0.05, cosine over 300 epochs after 40 of warm-up, drop path 0.2,
  RandAugment, mixup 0.8, CutMix 1.0, label smoothing 0.1, random erasing 0.25).

Every experiment is built from our config classes, so YAML files and `--params_override` reach
every field (`task.model.backbone.convnext.model_id`, `task.model.decoder.upernet.channels`,
`trainer.optimizer_config.optimizer.adamw_layer_decay.layer_decay`, ...). The tasks check an
`init_checkpoint` written by `convnext-tf convert --format model-garden` against the model.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import tf_keras
from official.core import config_definitions as cfg
from official.core import exp_factory, task_factory
from official.modeling import hyperparams
from official.modeling.optimization import optimizer_factory
from official.modeling.optimization.configs import learning_rate_config as lr_cfg
from official.modeling.optimization.configs import optimization_config as opt_cfg
from official.modeling.optimization.configs import optimizer_config
from official.vision.configs import common
from official.vision.configs import image_classification as cls_cfg
from official.vision.configs import maskrcnn as maskrcnn_cfg
from official.vision.configs import retinanet as retinanet_cfg
from official.vision.configs import semantic_segmentation as seg_cfg
from official.vision.modeling import segmentation_model
from official.vision.modeling.heads import segmentation_heads
from official.vision.tasks import image_classification, maskrcnn, retinanet, semantic_segmentation

from convnext_tf.backbones import arguments
from convnext_tf.backbones.model_garden import Backbone, ConvNeXt
from convnext_tf.necks.model_garden import Decoder, ExactFPNConfig, UperNetConfig

from . import init_checkpoint
from .layer_decay import LayerDecayAdamW
from .segmentation import decode_head

EXPERIMENTS = (
    "convnext_seg_upernet_ade20k", "convnext_seg_fpn", "convnext_retinanet_coco", "convnext_maskrcnn_coco",
    "convnext_imagenet",
)

# ---------------------------------------------------------------- the optimizer


@dataclasses.dataclass
class AdamWLayerDecayConfig(optimizer_config.BaseOptimizerConfig):
    """`LayerDecayAdamW`'s arguments (the learning rate comes from the schedule)."""

    name: str = "LayerDecayAdamW"
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8  # PyTorch's AdamW
    weight_decay: float = 0.05
    layer_decay: float = 0.9
    scheme: str = "single"  # 'single', 'group' or 'stage_wise'
    num_layers: Optional[int] = None
    depths: Optional[List[int]] = None  # default: read from the variable names


@dataclasses.dataclass
class OptimizerConfig(opt_cfg.OptimizerConfig):
    """Model Garden's optimizer one-of with an `adamw_layer_decay` choice."""

    type: Optional[str] = "adamw_layer_decay"
    adamw_layer_decay: AdamWLayerDecayConfig = dataclasses.field(default_factory=AdamWLayerDecayConfig)


@dataclasses.dataclass
class OptimizationConfig(opt_cfg.OptimizationConfig):
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)


for _legacy in (True, False):  # the task builds with Model Garden's legacy table by default
    try:
        optimizer_factory.register_optimizer_cls("adamw_layer_decay", LayerDecayAdamW, use_legacy_optimizer=_legacy)
    except ValueError:  # registered already (this module imported under a second name)
        pass


def optimization(
    lr: float, weight_decay: float, layer_decay: float, scheme: str, num_layers: int | None,
    schedule: dict, warmup_steps: int, warmup_lr: float = 0.0,
) -> OptimizationConfig:
    return OptimizationConfig(
        optimizer=OptimizerConfig(adamw_layer_decay=AdamWLayerDecayConfig(
            weight_decay=weight_decay, layer_decay=layer_decay, scheme=scheme, num_layers=num_layers,
        )),
        learning_rate=opt_cfg.LrConfig(**schedule),
        warmup=opt_cfg.WarmupConfig(
            type="linear", linear=lr_cfg.LinearWarmupConfig(warmup_steps=warmup_steps, warmup_learning_rate=warmup_lr)
        ),
    )


# ---------------------------------------------------------------- checking init_checkpoint


class _ChecksInitCheckpoint:
    """Names a mismatch between `init_checkpoint` and the model before Model Garden restores it."""

    def initialize(self, model: tf_keras.Model):
        if self.task_config.init_checkpoint:
            init_checkpoint.check(self.task_config.init_checkpoint, model, self.task_config.init_checkpoint_modules)
        return super().initialize(model)


# ---------------------------------------------------------------- segmentation


@dataclasses.dataclass
class AuxHead(hyperparams.Config):
    """mmseg's auxiliary FCN head: conv-BN-ReLU modules and a classifier on one backbone level."""

    loss_weight: float = 0.4  # 0 builds no auxiliary head
    level: int = 4
    num_convs: int = 1
    num_filters: int = 256


@dataclasses.dataclass
class SegmentationModelConfig(seg_cfg.SemanticSegmentationModel):
    backbone: Backbone = dataclasses.field(default_factory=Backbone)
    decoder: Decoder = dataclasses.field(default_factory=Decoder)
    aux_head: AuxHead = dataclasses.field(default_factory=AuxHead)
    # 'model_garden': Model Garden's SegmentationHead (`head`); 'semantic_fpn': a 3x3 conv-BN-ReLU
    # of head.num_filters per decoder level, resized to the lowest level's exact size and summed
    # (Model Garden's pyramid fusion needs sizes divisible by 32)
    head_type: str = "model_garden"


@dataclasses.dataclass
class SegmentationTaskConfig(seg_cfg.SemanticSegmentationTask):
    model: SegmentationModelConfig = dataclasses.field(default_factory=SegmentationModelConfig)


class DecoderHead(tf_keras.layers.Layer):
    """A head on the decoder's levels with Model Garden's head interface ((backbone, decoder) features)."""

    def __init__(self, head: tf_keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.head = head

    def call(self, inputs, training=None):
        return self.head(inputs[1], training=training)


class AuxSegmentationModel(segmentation_model.SegmentationModel):
    """Model Garden's segmentation model plus an auxiliary head, whose logits it returns in training."""

    def __init__(self, backbone, decoder, head, aux_head, **kwargs):
        super().__init__(backbone, decoder, head, **kwargs)
        self.aux_head = aux_head
        self._config_dict["aux_head"] = aux_head

    def call(self, inputs, training=None):
        features = self.backbone(inputs)
        decoded = self.decoder(features) if self.decoder else features
        outputs = {"logits": self.head((features, decoded))}
        if training:
            outputs["aux_logits"] = self.aux_head((features, features))
        return outputs

    @property
    def checkpoint_items(self):
        return {**super().checkpoint_items, "aux_head": self.aux_head}


@task_factory.register_task_cls(SegmentationTaskConfig)
class SegmentationTask(_ChecksInitCheckpoint, semantic_segmentation.SemanticSegmentationTask):
    """Model Garden's semantic segmentation task with an auxiliary head's loss, the `semantic_fpn`
    head, and every validation batch counted in mIoU (see `aggregate_logs`)."""

    def build_model(self) -> tf_keras.Model:
        config = self.task_config.model
        model = super().build_model()
        arguments.choice("task.model.head_type", config.head_type, ["model_garden", "semantic_fpn"])
        if config.head_type == "semantic_fpn":
            head = decode_head(model.decoder, config.num_classes, dropout_rate=0.0, channels=config.head.num_filters)
            model = segmentation_model.SegmentationModel(model.backbone, model.decoder, DecoderHead(head))
        aux = config.aux_head
        if not aux.loss_weight:
            model(tf_keras.Input(config.input_size), training=False)
            return model
        norm = self.task_config.model.norm_activation
        l2 = self.task_config.losses.l2_weight_decay
        aux_head = segmentation_heads.SegmentationHead(
            num_classes=self.task_config.model.num_classes, level=aux.level, num_convs=aux.num_convs,
            num_filters=aux.num_filters, activation=norm.activation, use_sync_bn=norm.use_sync_bn,
            norm_momentum=norm.norm_momentum, norm_epsilon=norm.norm_epsilon,
            kernel_regularizer=tf_keras.regularizers.l2(l2 / 2.0) if l2 else None,
        )
        model = AuxSegmentationModel(model.backbone, model.decoder, model.head, aux_head)
        model(tf_keras.Input(self.task_config.model.input_size), training=True)
        return model

    def aggregate_logs(self, state=None, step_outputs=None):
        # Model Garden 2.20 resets the IoU metric on the first call (state None), which comes after
        # the first batch was counted: that batch was lost (mIoU 0 with one validation step). Start
        # from a state instead, and reset once the evaluation is reduced.
        return super().aggregate_logs({"evaluating": True} if state is None else state, step_outputs)

    def reduce_aggregated_logs(self, aggregated_logs, global_step=None):
        logs = super().reduce_aggregated_logs(aggregated_logs, global_step)
        if self.iou_metric is not None:
            self.iou_metric.reset_states()
        return logs

    def build_losses(self, labels, model_outputs, aux_losses=None):
        loss = super().build_losses(labels, model_outputs, aux_losses)
        if "aux_logits" in model_outputs:
            aux = super().build_losses(labels, {"logits": model_outputs["aux_logits"]})
            loss += self.task_config.model.aux_head.loss_weight * aux
        return loss


ADE20K_TRAIN_EXAMPLES, ADE20K_VAL_EXAMPLES = 20210, 2000


def _segmentation(
    decoder: Decoder, head: seg_cfg.SegmentationHead, aux_weight: float, head_type: str = "model_garden"
) -> cfg.ExperimentConfig:
    batch, steps = 16, 160_000
    return cfg.ExperimentConfig(
        task=SegmentationTaskConfig(
            model=SegmentationModelConfig(
                num_classes=150, input_size=[512, 512, 3], min_level=2, max_level=5,
                backbone=Backbone(type="convnext", convnext=ConvNeXt(model_id="tiny", drop_path_rate=0.4)),
                decoder=decoder, head=head, aux_head=AuxHead(loss_weight=aux_weight), head_type=head_type,
                norm_activation=common.NormActivation(activation="relu", norm_momentum=0.9, norm_epsilon=1e-5),
            ),
            losses=seg_cfg.Losses(ignore_label=255, l2_weight_decay=0.0),
            train_data=seg_cfg.DataConfig(
                input_path="ade20k/train*", global_batch_size=batch, is_training=True, output_size=[512, 512],
                aug_scale_min=0.5, aug_scale_max=2.0, aug_rand_hflip=True,
            ),
            validation_data=seg_cfg.DataConfig(
                input_path="ade20k/val*", global_batch_size=8, is_training=False, output_size=[512, 512],
                resize_eval_groundtruth=True, drop_remainder=False,
            ),
            init_checkpoint_modules="backbone",
        ),
        trainer=cfg.TrainerConfig(
            train_steps=steps, validation_steps=ADE20K_VAL_EXAMPLES // 8, validation_interval=16_000,
            steps_per_loop=1000, summary_interval=1000, checkpoint_interval=16_000,
            best_checkpoint_export_subdir="best_ckpt", best_checkpoint_eval_metric="mean_iou",
            best_checkpoint_metric_comp="higher",
            optimizer_config=optimization(
                1e-4, 0.05, 0.9, "stage_wise", 6,
                dict(type="polynomial", polynomial=lr_cfg.PolynomialLrConfig(
                    initial_learning_rate=1e-4, decay_steps=steps, end_learning_rate=0.0, power=1.0)),
                warmup_steps=1500, warmup_lr=1e-10,
            ),
        ),
        restrictions=["task.train_data.is_training != None", "task.validation_data.is_training != None"],
    )


@exp_factory.register_config_factory("convnext_seg_upernet_ade20k")
def convnext_seg_upernet_ade20k() -> cfg.ExperimentConfig:
    """UperNet on ADE20K, the official ConvNeXt recipe (see the module docstring)."""
    return _segmentation(
        Decoder(type="upernet", upernet=UperNetConfig(channels=512)),
        seg_cfg.SegmentationHead(level=2, num_convs=0), aux_weight=0.4,
    )


@exp_factory.register_config_factory("convnext_seg_fpn")
def convnext_seg_fpn() -> cfg.ExperimentConfig:
    """Our FPN (any input size) with Semantic FPN's fusion of every level, ADE20K's settings."""
    return _segmentation(
        Decoder(type="exact_fpn", exact_fpn=ExactFPNConfig(num_filters=256)),
        seg_cfg.SegmentationHead(level=2, num_filters=128), aux_weight=0.0, head_type="semantic_fpn",
    )


# ---------------------------------------------------------------- detection


@dataclasses.dataclass
class RetinaNetConfig(retinanet_cfg.RetinaNet):
    backbone: Backbone = dataclasses.field(default_factory=Backbone)
    decoder: Decoder = dataclasses.field(default_factory=lambda: Decoder(type="exact_fpn"))


@dataclasses.dataclass
class RetinaNetTaskConfig(retinanet_cfg.RetinaNetTask):
    model: RetinaNetConfig = dataclasses.field(default_factory=RetinaNetConfig)


@task_factory.register_task_cls(RetinaNetTaskConfig)
class RetinaNetTask(_ChecksInitCheckpoint, retinanet.RetinaNetTask):
    """Model Garden's RetinaNet task on a ConvNeXt backbone."""


@dataclasses.dataclass
class MaskRCNNConfig(maskrcnn_cfg.MaskRCNN):
    backbone: Backbone = dataclasses.field(default_factory=Backbone)
    decoder: Decoder = dataclasses.field(default_factory=lambda: Decoder(type="exact_fpn"))


@dataclasses.dataclass
class MaskRCNNTaskConfig(maskrcnn_cfg.MaskRCNNTask):
    model: MaskRCNNConfig = dataclasses.field(default_factory=MaskRCNNConfig)


@task_factory.register_task_cls(MaskRCNNTaskConfig)
class MaskRCNNTask(_ChecksInitCheckpoint, maskrcnn.MaskRCNNTask):
    """Model Garden's Mask R-CNN task on a ConvNeXt backbone."""


def _detection(stock_name: str, task_cls, min_level: int) -> cfg.ExperimentConfig:
    """Model Garden's COCO experiment (data, parser, evaluation) with ConvNeXt, our FPN and the official optimizer."""
    stock = exp_factory.get_exp_config(stock_name)
    batch = 16
    epoch = retinanet_cfg.COCO_TRAIN_EXAMPLES // batch
    task = task_cls(stock.task.as_dict())
    task.init_checkpoint = None
    task.init_checkpoint_modules = "backbone"
    task.losses.l2_weight_decay = 0.0  # AdamW's decoupled weight decay instead
    task.model.input_size = [1024, 1024, 3]
    task.model.backbone = Backbone(
        type="convnext", convnext=ConvNeXt(model_id="tiny", min_level=min_level, drop_path_rate=0.4)
    )
    task.model.decoder = Decoder(type="exact_fpn", exact_fpn=ExactFPNConfig(num_filters=256))
    task.train_data.global_batch_size = batch
    task.validation_data.global_batch_size = 8
    trainer = cfg.TrainerConfig(
        train_steps=36 * epoch, validation_steps=retinanet_cfg.COCO_VAL_EXAMPLES // 8, validation_interval=epoch,
        steps_per_loop=1000, summary_interval=1000, checkpoint_interval=epoch,
        optimizer_config=optimization(
            1e-4, 0.05, 0.95, "group", 6,
            dict(type="stepwise", stepwise=lr_cfg.StepwiseLrConfig(
                boundaries=[27 * epoch, 33 * epoch], values=[1e-4, 1e-5, 1e-6])),
            warmup_steps=500, warmup_lr=1e-7,
        ),
    )
    return cfg.ExperimentConfig(task=task, trainer=trainer, restrictions=stock.restrictions)


@exp_factory.register_config_factory("convnext_retinanet_coco")
def convnext_retinanet_coco() -> cfg.ExperimentConfig:
    """RetinaNet (levels 3..7) on COCO at 1024x1024."""
    return _detection("retinanet_resnetfpn_coco", RetinaNetTaskConfig, min_level=3)


@exp_factory.register_config_factory("convnext_maskrcnn_coco")
def convnext_maskrcnn_coco() -> cfg.ExperimentConfig:
    """Mask R-CNN (levels 2..6) on COCO at 1024x1024."""
    return _detection("maskrcnn_resnetfpn_coco", MaskRCNNTaskConfig, min_level=2)


# ---------------------------------------------------------------- classification


@dataclasses.dataclass
class ClassificationModelConfig(cls_cfg.ImageClassificationModel):
    backbone: Backbone = dataclasses.field(default_factory=Backbone)


@dataclasses.dataclass
class ClassificationTaskConfig(cls_cfg.ImageClassificationTask):
    model: ClassificationModelConfig = dataclasses.field(default_factory=ClassificationModelConfig)


@task_factory.register_task_cls(ClassificationTaskConfig)
class ClassificationTask(_ChecksInitCheckpoint, image_classification.ImageClassificationTask):
    """Model Garden's image classification task on a ConvNeXt backbone."""


@exp_factory.register_config_factory("convnext_imagenet")
def convnext_imagenet() -> cfg.ExperimentConfig:
    """ConvNeXt V2-T fine-tuning on ImageNet-1k (the official recipe; see the module docstring).

    Model Garden's classifier pools the last stage after its output LayerNorm; the official head
    pools first and normalises after (start from a backbone checkpoint; the head is new).
    """
    stock = exp_factory.get_exp_config("resnet_imagenet")
    batch = 1024
    epoch = cls_cfg.IMAGENET_TRAIN_EXAMPLES // batch
    lr = 8e-4 * batch / 256
    task = ClassificationTaskConfig(stock.task.as_dict())
    task.init_checkpoint_modules = "backbone"
    task.model.backbone = Backbone(
        type="convnext",
        convnext=ConvNeXt(model_id="tiny", version="v2", min_level=5, max_level=5, drop_path_rate=0.2),
    )
    task.model.add_head_batch_norm = False
    task.model.dropout_rate = 0.0
    task.losses.l2_weight_decay = 0.0
    task.losses.one_hot = True
    task.losses.label_smoothing = 0.0  # in mixup_and_cutmix
    task.train_data.global_batch_size = batch
    task.train_data.aug_type = common.Augmentation(
        type="randaug", randaug=common.RandAugment(magnitude=9, magnitude_std=0.5)
    )
    task.train_data.mixup_and_cutmix = common.MixupAndCutmix(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    task.train_data.random_erasing = common.RandomErasing(probability=0.25)
    task.validation_data.global_batch_size = 256
    trainer = cfg.TrainerConfig(
        train_steps=300 * epoch, validation_steps=cls_cfg.IMAGENET_VAL_EXAMPLES // 256, validation_interval=epoch,
        steps_per_loop=epoch, summary_interval=epoch, checkpoint_interval=epoch,
        optimizer_config=optimization(
            lr, 0.05, 0.9, "single", None,
            dict(type="cosine", cosine=lr_cfg.CosineLrConfig(
                initial_learning_rate=lr, decay_steps=300 * epoch, alpha=1e-6 / lr)),
            warmup_steps=40 * epoch,
        ),
    )
    return cfg.ExperimentConfig(task=task, trainer=trainer, restrictions=stock.restrictions)


def experiment(name: str) -> cfg.ExperimentConfig:
    """The config of a registered experiment; an error that lists ours when the name is unknown."""
    try:
        return exp_factory.get_exp_config(name)
    except (KeyError, LookupError):
        raise ValueError(
            f"Unknown experiment {name!r}; the ConvNeXt experiments are: {', '.join(EXPERIMENTS)} "
            "(Model Garden's own are registered too)."
        ) from None
