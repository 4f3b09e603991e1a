"""Small models of every family the graph builders recognize, for tests."""
from __future__ import annotations

import numpy as np
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

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (self.downsample(x) if hasattr(self, "downsample") else x))


class TorchvisionStyleResNet(nn.Module):
    """Parameter names as in torchvision's ResNet (conv1/bn1, layerK.N.*, downsample, fc)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(_BasicBlock(8, 8, False), _BasicBlock(8, 8, False))
        self.layer2 = nn.Sequential(_BasicBlock(8, 16, True))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean(dim=(2, 3)))


class TorchvisionStyleVGG(nn.Module):
    """Parameter names as in torchvision's VGG with batch norm (``features.N``, ``classifier.N``):
    convolutions, an adaptive average pool to 2x2, flattened into the classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(16 * 4, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _conv_bn(cin, cout, k, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class _InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expand):
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv, self.residual = nn.Sequential(*layers), cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class TorchvisionStyleMobileNetV2(nn.Module):
    """Parameter names as in torchvision's MobileNetV2 (``features.0`` stem, ``features.N.conv.M``
    inverted residuals, a last 1x1 convolution, ``classifier.1``), all strides 1."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(_conv_bn(3, 8, 3), _InvertedResidual(8, 8, 1), _InvertedResidual(8, 12, 4),
                                      _InvertedResidual(12, 12, 4), _conv_bn(12, 32, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def family_models() -> dict[str, tuple[nn.Module, dict[str, str], str]]:
    """name -> (model, safetensors metadata, expected family); models in eval mode, BatchNorm with
    non-trivial running statistics."""
    torch.manual_seed(0)
    models = {
        "mlp": (MLP(5, [16, 8], 3, "tanh"), {"activation": "tanh"}, "mlp"),
        "mlp_relu": (MLP(5, [16, 16, 16], 2, "relu"), {"activation": "relu"}, "mlp"),
        "resmlp": (ResMLP(5, 16, 32, 2, 3, "relu"), {"activation": "relu"}, "resnet"),
        "cnn": (SmallCNN(activation="relu"), {"activation": "relu"}, "cnn"),
        "cnn_flatten_bn": (nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3),
                                         nn.Flatten(), nn.Linear(4 * 4 * 4, 5)), {}, "cnn"),
        "siren": (Siren([32, 32]), {"activation": "sine", "family": "inr"}, "inr"),
        "resnet_tv": (TorchvisionStyleResNet(), {"activation": "relu"}, "resnet"),
        "vgg_tv": (TorchvisionStyleVGG(), {"activation": "relu"}, "cnn"),
        "mobilenet_tv": (TorchvisionStyleMobileNetV2(), {"activation": "relu6"}, "cnn"),
        "bert": (TinyBert(16, 8, 32, 4, 64, 2, 2), {"activation": "gelu", "num_attention_heads": "4"}, "transformer"),
    }
    for model, _, _ in models.values():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
        model.eval()
    return models


def example_input(name: str, model: nn.Module) -> torch.Tensor:
    """A batch of inputs for one of :func:`family_models`."""
    gen = torch.Generator().manual_seed(1)
    if name == "bert":
        return torch.randint(0, 16, (4, 8), generator=gen)
    if name in ("cnn",):
        return torch.randn(4, 1, 8, 8, generator=gen)
    if name in ("cnn_flatten_bn", "resnet_tv", "vgg_tv", "mobilenet_tv"):
        return torch.randn(4, 3, 8, 8, generator=gen)
    if name == "siren":
        return torch.rand(16, 2, generator=gen) * 2 - 1
    return torch.randn(4, 5, generator=gen)


def sklearn_mlp(seed: int = 0, max_iter: int = 60):
    """A ReLU MLP trained by scikit-learn on its bundled digits (a model nobody here wrote): the
    classifier, its weights as a bare ``nn.Sequential``-style state dict (``0.weight``, ``0.bias``,
    ``2.weight``, ...; no record of its activation) and 64 of its inputs."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    model = MLPClassifier((32, 16), activation="relu", max_iter=max_iter, random_state=seed).fit(x / 16, y)
    return model, sklearn_state(model), x[:64] / 16


def sklearn_state(model) -> dict[str, torch.Tensor]:
    """A scikit-learn MLP's weights as a bare ``nn.Sequential``-style state dict."""
    state = {}
    for k, (w, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        state[f"{2 * k}.weight"] = torch.from_numpy(np.ascontiguousarray(w.T))
        state[f"{2 * k}.bias"] = torch.from_numpy(b.copy())
    return state
