"""The network's per-object calls and the soft aggregation as computed before the frame's share of each
convolution was split off (modules.conv_of_concat) and before the odds form: references for equivalence tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edge_vos.model.efficientnet import EfficientNetLiteTrunk


def value_by_concatenation(net, image, k16, masks, others):
    """The value encoder as one pass over [RGB, mask, others] per object: the maths before its convolutions
    were split by input channel (modules.conv_of_concat)."""
    n = masks.shape[0]
    encoder = net.value_encoder
    f16, _, _ = EfficientNetLiteTrunk.forward(encoder, torch.cat([image.expand(n, -1, -1, -1), masks, others], 1))
    fuser = encoder.fuser
    x = fuser.block1(torch.cat([f16, k16.expand(n, -1, -1, -1)], 1))
    x = x + fuser.attention(x)
    return fuser.block2(x)


def decode_by_concatenation(net, readout, query_value, f8, f4):
    decoder = net.decoder
    x = decoder.compress(torch.cat([readout, query_value.expand(readout.shape[0], -1, -1, -1)], 1))
    x = decoder.up_8_4(f4, decoder.up_16_8(f8, x))
    return F.interpolate(decoder.pred(F.relu(x)), scale_factor=4.0, mode="bilinear", align_corners=False)


def softmax_of_logits(probs):
    """Official STCN's aggregate, as the tracker computed it before the odds form."""
    background = torch.prod(1 - probs, dim=0, keepdim=True)
    stacked = torch.cat([background, probs], dim=0).clamp(1e-7, 1 - 1e-7)
    return torch.softmax(torch.log(stacked / (1 - stacked)), dim=0)
