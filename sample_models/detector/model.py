"""DetectorNet: a small anchor-free YOLO-style detector of circles, squares and triangles.

This is edgeq's detection sample. It takes a 128x128 RGB image (values in [0, 1]) as a float32
NCHW tensor [1, 3, 128, 128] and returns ONE tensor [1, 4 + C, N] (C = 3 classes, N = 256 anchors:
the 16 x 16 cells of a stride-8 feature map, row-major) that concatenates along axis 1, exactly
like a YOLOv8 export:

    rows 0..3   the decoded box of each anchor, xywh in PIXELS of the 128x128 input
                (centre x, centre y, width, height)
    rows 4..    the sigmoid class scores (0..1), one row per class

The boxes are decoded inside the graph (YOLOv5-style, no exp):

    cx = (grid_x + 2 * sigmoid(tx) - 0.5) * stride      (the centre may leave its cell by half a cell)
    cy = (grid_y + 2 * sigmoid(ty) - 0.5) * stride
    w  = (2 * sigmoid(tw)) ** 2 * anchor                 (anchor = 4 * stride = 32 px; w in 0..128 px)
    h  = (2 * sigmoid(th)) ** 2 * anchor

Architecture: a plain conv backbone (3x3 conv + BN + ReLU; strides 2, 2, 2 to a 16x16 map of 64
channels), then two 3x3 conv branches (boxes, classes) and 1x1 prediction convs. Only Conv,
Relu, Sigmoid, Mul, Add, Reshape and Concat are exported (BN folds into the convs); the grid is
a constant buffer (not persistent: not in the weights file).
"""

import torch
from torch import nn

# (in_channels, out_channels, stride) of the backbone's 3x3 conv blocks: 128 -> 64 -> 32 -> 16.
BACKBONE = (
    (3, 16, 2),
    (16, 32, 2),
    (32, 32, 1),
    (32, 64, 2),
    (64, 64, 1),
    (64, 64, 1),
    (64, 64, 1),
)
STRIDE = 8
ANCHOR = 4.0 * STRIDE  # box size (pixels) at sigmoid(t) = 0.5; the largest box is 4 x this = the image
PRIOR_SCORE = 0.01  # initial class score of every anchor (bias of the class conv)


class ConvBNReLU(nn.Sequential):
    """3x3 conv (no bias) + BatchNorm + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class DetectorNet(nn.Module):
    """[B, 3, 128, 128] float32 in [0, 1] -> [B, 4 + num_classes, 256]: pixel boxes xywh, then sigmoid scores."""

    def __init__(self, *, num_classes: int = 3, image_size: int = 128):
        super().__init__()
        if image_size % STRIDE:
            raise ValueError(f"image_size must be a multiple of {STRIDE}, got {image_size}")
        self.num_classes = num_classes
        self.cells = image_size // STRIDE
        self.num_anchors = self.cells * self.cells
        self.backbone = nn.Sequential(*[ConvBNReLU(i, o, s) for i, o, s in BACKBONE])
        ch = BACKBONE[-1][1]
        self.box_branch = ConvBNReLU(ch, ch)
        self.cls_branch = ConvBNReLU(ch, ch)
        self.xy = nn.Conv2d(ch, 2, kernel_size=1)
        self.wh = nn.Conv2d(ch, 2, kernel_size=1)
        self.cls = nn.Conv2d(ch, num_classes, kernel_size=1)
        with torch.no_grad():
            self.xy.bias.zero_()
            self.wh.bias.zero_()
            self.cls.bias.fill_(-torch.log(torch.tensor((1 - PRIOR_SCORE) / PRIOR_SCORE)).item())
        # Grid x, y of each anchor (row-major over the 16 x 16 cells), shifted by the -0.5 of the decode.
        idx = torch.arange(self.num_anchors)
        grid = torch.stack([idx % self.cells, idx // self.cells]).float().reshape(1, 2, self.num_anchors)
        self.register_buffer("grid", grid - 0.5, persistent=False)

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Undecoded predictions: tx ty [B, 2, N], tw th [B, 2, N], class logits [B, C, N]."""
        f = self.backbone(x)
        b = self.box_branch(f)
        c = self.cls_branch(f)
        n = self.num_anchors
        return (self.xy(b).reshape(-1, 2, n), self.wh(b).reshape(-1, 2, n),
                self.cls(c).reshape(-1, self.num_classes, n))

    def decode(self, txy: torch.Tensor, twh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel box centres [B, 2, N] and sizes [B, 2, N] from the raw box predictions."""
        xy = (torch.sigmoid(txy) * 2.0 + self.grid) * STRIDE
        s = torch.sigmoid(twh) * 2.0
        return xy, s * s * ANCHOR

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The exported graph: [B, 4 + C, N] = pixel boxes xywh, then sigmoid class scores."""
        txy, twh, logits = self.raw(x)
        xy, wh = self.decode(txy, twh)
        return torch.cat([xy, wh, torch.sigmoid(logits)], dim=1)
