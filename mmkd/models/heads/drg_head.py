"""The auxiliary classifier of LightSKD's distillation with reverse guidance."""
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmkd.registry import MODELS


class SepConv(nn.Sequential):
    """Separable convolution block of LightSKD (and of BYOT / SCAN).

    depthwise 3x3 (stride ``stride``) -> pointwise 1x1 -> BN -> ReLU ->
    depthwise 3x3 -> pointwise 1x1 (to ``out_channels``) -> BN -> ReLU; no
    convolution has a bias.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first depthwise convolution. Defaults to 2.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2) -> None:
        c = in_channels
        super().__init__(
            nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=1, padding=1, groups=c, bias=False),
            nn.Conv2d(c, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


@MODELS.register_module()
class DRGHead(nn.Module):
    """Auxiliary classifier of LightSKD's DRG (distillation with reverse guidance).

    "Lightweight Self-Knowledge Distillation with Multi-source Information
    Fusion" (LightSKD), arXiv:2305.09183, 2023; the architecture of the
    official code's stage-2 head. With ``C = in_channels``:

    * attention ``a = sigmoid(upsample(ReLU(BN(SepConv(C -> C, stride 2)(x)))))``,
      bilinearly upsampled back to the input size (``align_corners=True``);
    * ``x * a`` -> SepConv(C -> 2C, stride 2) -> SepConv(2C -> 4C, stride 2)
      -> global average pooling -> Linear(4C -> num_classes).

    Its logits are the detached "teacher" of the final logits in
    :class:`~mmkd.models.losses.DRGLoss`; the head is trained by its own
    cross-entropy. It has ``17 C^2 + 96 C + (4 C + 1) * num_classes``
    parameters (BN running statistics are buffers, not counted):

    ========================================  ===========  ============
    backbone (stage-2 width ``C``)            100 classes  1000 classes
    ========================================  ===========  ============
    ResNet-18 (``C = 128``)                   342,116      803,816
    ResNet-50 (``C = 512``)                   4,710,500    6,554,600
    ========================================  ===========  ============

    Args:
        in_channels (int): Channels of the stage feature map it is attached to.
        num_classes (int): Number of classes.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        c = in_channels
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.attention = nn.Sequential(SepConv(c, c, stride=2), nn.BatchNorm2d(c), nn.ReLU())
        self.convs = nn.Sequential(SepConv(c, 2 * c, stride=2), SepConv(2 * c, 4 * c, stride=2))
        self.fc = nn.Linear(4 * c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Maps a ``(B, C, H, W)`` feature map to ``(B, num_classes)`` logits."""
        a = F.interpolate(self.attention(x), size=x.shape[-2:], mode='bilinear',
                          align_corners=True).sigmoid()
        feat = self.convs(x * a)
        return self.fc(F.adaptive_avg_pool2d(feat, 1).flatten(1))
