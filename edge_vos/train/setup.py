"""The network to train: built and initialised as configured, low key levels frozen, batch norm fixed."""

from __future__ import annotations

import logging

from torch import nn

from edge_vos.model.network import STCN, build_network
from edge_vos.train.config import TrainConfig

log = logging.getLogger(__name__)


def build_for_training(cfg: TrainConfig) -> STCN:
    """The network of `cfg.model`, initialised as configured (ImageNet trunks, weights file or scratch)."""
    from edge_vos.model.checkpoint import init_trunks_from_torchvision, load_into, read_state_dict
    from edge_vos.model.efficientnet import init_trunks_from_efficientnet

    m = cfg.model
    net = build_network(m.arch, use_cbam=m.use_cbam)
    if m.init_weights:
        load_into(net, read_state_dict(m.init_weights))
        log.info("initialised from %s", m.init_weights)
        return net
    if m.init == "scratch":
        log.info("trunks from scratch (random)")
        return net
    done = init_trunks_from_efficientnet(net) if m.init in ("auto", "imagenet") else []
    if m.key_imagenet and not any(n == "key_encoder" for n in done):
        init_trunks_from_torchvision(net, m.key_imagenet, m.value_imagenet or None)
        done.append("key_encoder (torchvision file)")
    if m.init == "imagenet" and not done:
        raise FileNotFoundError(
            f"{m.arch}: init 'imagenet' needs model.key_imagenet (a torchvision ResNet file) for ResNet trunks"
        )
    if not done:
        log.warning("%s: no ImageNet source for its trunks; training them from scratch", m.arch)
    return net


def freeze_key_low_levels(net: STCN, upto: str) -> int:
    """Stops gradients into the key trunk up to f4 or f8 (stem included); returns the frozen tensor count."""
    from edge_vos.model.efficientnet import EfficientNetLiteTrunk

    if not upto:
        return 0
    enc = net.key_encoder
    if isinstance(enc, EfficientNetLiteTrunk):
        last = enc.f4_block if upto == "f4" else enc.f8_block
        modules: list[nn.Module] = [enc.conv1, enc.bn1, *list(enc.blocks)[: last + 1]]
    else:
        modules = [enc.conv1, enc.bn1, getattr(enc, enc.first_stage_name)]
        if upto == "f8":
            modules.append(enc.layer2)
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    return len(params)


def set_train_mode(net: nn.Module, freeze_bn: bool) -> None:
    net.train()
    if freeze_bn:
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
