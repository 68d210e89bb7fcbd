"""The PyTorch reference (Hugging Face transformers) and checkpoint formats written independently.

The official and timm key layouts here are written from those projects' module trees, not from
our converter's tables, so loading them tests the converter against the real formats.
"""
from __future__ import annotations

import re

import numpy as np
import torch
from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextV2Config, ConvNextV2ForImageClassification

from convnext_tf.backbones.config import ConvNeXtConfig


def hf_config(name: str, num_labels: int = 1000, **kwargs):
    """A transformers config equal to our variant `name` (LayerNorm eps 1e-6, exact GELU)."""
    cfg = ConvNeXtConfig.from_name(name)
    config_cls = ConvNextV2Config if cfg.version == "v2" else ConvNextConfig
    return config_cls(
        depths=list(cfg.depths), hidden_sizes=list(cfg.dims), layer_norm_eps=1e-6, hidden_act="gelu",
        num_labels=num_labels, **kwargs,
    )


def hf_classifier(name: str, num_labels: int = 1000, seed: int = 0) -> torch.nn.Module:
    """The reference classifier with every parameter randomised (eval mode)."""
    config = hf_config(name, num_labels)
    cls = ConvNextV2ForImageClassification if config.model_type == "convnextv2" else ConvNextForImageClassification
    return randomize(cls(config), seed).eval()


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BatchNorm statistic a random value of order 1.

    Conv and linear kernels get std 1/sqrt(fan_in) so activations stay of order 1; everything
    else (norm scales and shifts, layer scales, GRN, biases) is drawn from N(0, 1), so that
    layer-scale gammas (1e-6 at init) and GRN (0 at init) cannot hide a bug.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        for pname, p in m.named_parameters(recurse=False):
            if pname == "weight" and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen))
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


def hf_to_official(sd: dict) -> dict:
    """Hugging Face classifier keys -> facebookresearch ConvNeXt(-V2) keys and shapes."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^convnext(v2)?\.", "", k)
        k = k.replace("embeddings.patch_embeddings.", "downsample_layers.0.0.")
        k = k.replace("embeddings.layernorm.", "downsample_layers.0.1.")
        k = re.sub(r"encoder\.stages\.(\d)\.downsampling_layer\.", r"downsample_layers.\1.", k)
        k = re.sub(r"encoder\.stages\.(\d)\.layers\.(\d+)\.", r"stages.\1.\2.", k)
        k = k.replace("layer_scale_parameter", "gamma").replace(".layernorm.", ".norm.")
        k = k.replace("grn.weight", "grn.gamma").replace("grn.bias", "grn.beta")
        k = re.sub(r"^layernorm\.", "norm.", k).replace("classifier.", "head.")
        out[k] = v.reshape(1, 1, 1, -1) if ".grn." in k else v
    return {"model": out}


def hf_to_timm(sd: dict, conv_mlp: bool) -> dict:
    """Hugging Face classifier keys -> timm keys; `conv_mlp` stores fc1/fc2 as 1x1 convs (atto..nano)."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^convnext(v2)?\.", "", k)
        k = k.replace("embeddings.patch_embeddings.", "stem.0.").replace("embeddings.layernorm.", "stem.1.")
        k = re.sub(r"encoder\.stages\.(\d)\.downsampling_layer\.", r"stages.\1.downsample.", k)
        k = re.sub(r"encoder\.stages\.(\d)\.layers\.(\d+)\.", r"stages.\1.blocks.\2.", k)
        k = k.replace(".dwconv.", ".conv_dw.").replace(".layernorm.", ".norm.")
        k = k.replace(".pwconv1.", ".mlp.fc1.").replace(".pwconv2.", ".mlp.fc2.").replace(".grn.", ".mlp.grn.")
        k = k.replace("layer_scale_parameter", "gamma")
        k = re.sub(r"^layernorm\.", "head.norm.", k).replace("classifier.", "head.fc.")
        if ".mlp.grn." in k:
            v = v.reshape(-1)
        if conv_mlp and re.search(r"\.mlp\.fc\d\.weight$", k):
            v = v[:, :, None, None]
        out[k] = v
    return out


# A small custom ConvNeXt for tests of behaviour (shapes, saving, training), not of parity.
TINY_DEPTHS, TINY_DIMS = (1, 1, 2, 1), (16, 32, 48, 64)
