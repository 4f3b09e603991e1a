"""Small models of every family the graph builders recognize, for tests."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.zoo.models import MLP, ResMLP, Siren, SmallCNN, TinyBert


class _BasicBlock(nn.Module):
    def __init__(self, cin, cout, project):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        if project:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class TorchvisionStyleResNet(nn.Module):
    """Parameter names as in torchvision's ResNet (conv1/bn1, layerK.N.*, downsample, fc)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(_BasicBlock(8, 8, False), _BasicBlock(8, 8, False))
        self.layer2 = nn.Sequential(_BasicBlock(8, 16, True))
        self.fc = nn.Linear(16, 10)


def family_models() -> dict[str, tuple[nn.Module, dict[str, str], str]]:
    """name -> (model, safetensors metadata, expected family)."""
    torch.manual_seed(0)
    return {
        "mlp": (MLP(5, [16, 8], 3, "tanh"), {"activation": "tanh"}, "mlp"),
        "mlp_relu": (MLP(5, [16, 16, 16], 2, "relu"), {"activation": "relu"}, "mlp"),
        "resmlp": (ResMLP(5, 16, 32, 2, 3, "relu"), {"activation": "relu"}, "resnet"),
        "cnn": (SmallCNN(activation="relu"), {"activation": "relu"}, "cnn"),
        "cnn_flatten_bn": (nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3),
                                         nn.Flatten(), nn.Linear(4 * 4 * 4, 5)), {}, "cnn"),
        "siren": (Siren([32, 32]), {"activation": "sine", "family": "inr"}, "inr"),
        "resnet_tv": (TorchvisionStyleResNet(), {"activation": "relu"}, "resnet"),
        "bert": (TinyBert(16, 8, 32, 4, 64, 2, 2), {"activation": "gelu", "num_attention_heads": "4"}, "transformer"),
    }
