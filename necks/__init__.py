"""Necks that turn a backbone's feature dict into a fused pyramid: FPN and UperNet."""
from .fpn import FPN
from .model_garden import Decoder, ExactFPNConfig, UperNetConfig
from .ops import AdaptiveAvgPool, ResizeLike
from .upernet import UperNet

NECKS = {"upernet": UperNet, "fpn": FPN}
