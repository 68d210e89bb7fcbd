"""Registers ConvNeXt with TensorFlow Model Garden: import this module to use Model Garden.

The backbone ('convnext'), the decoders ('upernet', 'exact_fpn'), the optimizer
('adamw_layer_decay'), the tasks and the experiments (`experiments.EXPERIMENTS`) are registered
here, as Model Garden projects do in their `registry_imports.py`. Plain Keras users of
`convnext_tf.backbones` never import Model Garden.
"""
# pylint: disable=unused-import
from official.vision import registry_imports as _official_registry  # Model Garden's own experiments

from convnext_tf.backbones import model_garden as _backbone
from convnext_tf.necks import model_garden as _decoders
from convnext_tf.tasks import experiments as _experiments
