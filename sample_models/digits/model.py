"""DigitsNet: a small MobileNet-style CNN that classifies handwritten digits.

This is the sample model shipped with edgeq. It takes a single-channel
32x32 image (the 8x8 scikit-learn "digits" images, scaled to [0, 1],
resized to 32x32 with bilinear interpolation and normalized with
(x - 0.5) / 0.5) as a float32 NCHW tensor of shape [1, 1, 32, 32], and
returns raw class logits of shape [1, num_classes] (10 digits by default).

Architecture: a 3x3 conv stem (1 -> 32) followed by six depthwise-separable
blocks (depthwise 3x3 conv + BN + ReLU6, pointwise 1x1 conv + BN + ReLU6),
global average pooling, dropout and a linear classifier. Only plain ops are
used (no data-dependent control flow), so the model exports cleanly with
torch.onnx.export and quantizes well to INT8.
"""

import torch
from torch import nn

# (in_channels, out_channels, stride) of each depthwise-separable block.
BLOCKS = (
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
)


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 conv + BN + ReLU6, then pointwise 1x1 conv + BN + ReLU6."""

    def __init__(self, *, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_ch, in_ch, kernel_size=3, stride=stride, padding=1, groups=in_ch, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = nn.ReLU6(inplace=True)
        self.pointwise = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.depthwise(x)))
        return self.act2(self.bn2(self.pointwise(x)))


class DigitsNet(nn.Module):
    """MobileNet-style digit classifier: [N, 1, 32, 32] float32 -> [N, num_classes] logits."""

    def __init__(self, *, num_classes: int = 10, dropout: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU6(inplace=True),
        )
        self.blocks = nn.Sequential(
            *[DepthwiseSeparable(in_ch=i, out_ch=o, stride=s) for i, o, s in BLOCKS]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(BLOCKS[-1][1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return self.classifier(x)
