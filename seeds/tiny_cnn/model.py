"""tiny_cnn: a small convolutional network for 16x16 grayscale images in 10 classes.

ge evolves the segments below the header. evaluate.py imports `get_optimizer` and `Net`.
"""

import torch
import torch.nn.functional as F
from torch import nn


# --OPTION--
def get_optimizer(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


# --OPTION--
class ConvBlock(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


# --OPTION--
class Net(nn.Module):
    # -- NOTE --
    # Input: a float batch of shape (N, 1, 16, 16); output: logits of shape (N, 10).
    # The images are patches of oriented stripes (5 orientations x 2 stripe widths = 10 classes)
    # at a random position, phase and contrast, in strong pixel noise.
    # Training is fixed and short (a few epochs on one CPU core), so bigger is not always better.
    # Objectives: maximise validation accuracy, minimise the number of parameters.
    # -- NOTE --
    def __init__(self, num_classes=10):
        super().__init__()
        self.block1 = ConvBlock(1, 8)
        self.block2 = ConvBlock(8, 16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        x = x.mean(dim=(2, 3))
        return self.head(x)
