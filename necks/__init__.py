"""Necks that turn a backbone's feature dict into a fused pyramid: FPN and UperNet."""
from .fpn import FPN
from .ops import AdaptiveAvgPool, ResizeLike
from .upernet import UperNet

NECKS = {"upernet": UperNet, "fpn": FPN}
