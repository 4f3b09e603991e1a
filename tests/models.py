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
    if name in ("cnn_flatten_bn", "resnet_tv", "vgg_tv"):
        return torch.randn(4, 3, 8, 8, generator=gen)
    if name == "siren":
        return torch.rand(16, 2, generator=gen) * 2 - 1
    return torch.randn(4, 5, generator=gen)


#: weights drawn wider than transformers' default (0.02), so that attention is far from uniform and
#: a broken wiring shows in the outputs
HF_SMALL = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                max_position_embeddings=40, initializer_range=0.4)


def hf_models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """name -> (a tiny randomly initialized ``transformers`` model in float64 and eval mode, a batch
    of its inputs): the architectures the graph builders recognize."""
    import transformers as T

    torch.manual_seed(0)
    models = {
        "bert": T.BertForSequenceClassification(T.BertConfig(**HF_SMALL, num_labels=3)),
        "bert_mlm": T.BertForMaskedLM(T.BertConfig(**HF_SMALL)),
        "bert_mlm_untied": T.BertForMaskedLM(T.BertConfig(**HF_SMALL, tie_word_embeddings=False)),
        "roberta": T.RobertaForSequenceClassification(T.RobertaConfig(**HF_SMALL, num_labels=3)),
        "distilbert": T.DistilBertForSequenceClassification(T.DistilBertConfig(
            vocab_size=64, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=40, num_labels=3,
            initializer_range=0.4)),
    }
    tokens = torch.randint(3, 64, (3, 10), generator=torch.Generator().manual_seed(1))
    inputs = dict.fromkeys(models, tokens)
    models["vit"] = T.ViTForImageClassification(T.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, num_labels=3, initializer_range=0.4))
    inputs["vit"] = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    decoder = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                   max_position_embeddings=64, initializer_range=0.4)
    models["llama"] = T.LlamaForCausalLM(T.LlamaConfig(**decoder, num_key_value_heads=4))
    models["llama_gqa"] = T.LlamaForCausalLM(T.LlamaConfig(**decoder, num_key_value_heads=2, tie_word_embeddings=True))
    models["mistral"] = T.MistralForCausalLM(T.MistralConfig(**decoder, num_key_value_heads=2))
    models["qwen2"] = T.Qwen2ForCausalLM(T.Qwen2Config(**decoder, num_key_value_heads=2))
    gpt2 = dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=40, initializer_range=0.4,
                bos_token_id=0, eos_token_id=0, pad_token_id=0)
    models["gpt2"] = T.GPT2LMHeadModel(T.GPT2Config(**gpt2))
    models["gpt2_cls"] = T.GPT2ForSequenceClassification(T.GPT2Config(**gpt2, num_labels=3))
    t5 = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, initializer_factor=1.0,
              decoder_start_token_id=0)
    models["t5"] = T.T5ForConditionalGeneration(T.T5Config(**t5))
    models["t5_gated"] = T.T5ForConditionalGeneration(T.T5Config(**t5, feed_forward_proj="gated-gelu",
                                                                 tie_word_embeddings=False))
    for name in ("llama", "llama_gqa", "mistral", "qwen2", "gpt2", "gpt2_cls", "t5", "t5_gated"):
        inputs[name] = tokens
    models["mobilenet_v2"] = _trained_statistics(T.MobileNetV2ForImageClassification(T.MobileNetV2Config(
        image_size=32, depth_multiplier=0.25, num_labels=3)))
    models["efficientnet"] = _trained_statistics(T.EfficientNetForImageClassification(T.EfficientNetConfig(
        image_size=32, width_coefficient=0.1, depth_coefficient=0.5, hidden_dim=128, num_labels=3, initializer_range=0.45)))
    models["regnet"] = _trained_statistics(T.RegNetForImageClassification(T.RegNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], groups_width=4, num_labels=3)))
    for name in ("mobilenet_v2", "efficientnet", "regnet"):
        inputs[name] = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return {name: (model.double().eval(), inputs[name]) for name, model in models.items()}


def _trained_statistics(model: nn.Module) -> nn.Module:
    """``model`` with BatchNorm parameters and running statistics drawn away from their identity
    initialization (as training leaves them), so that they matter to the outputs."""
    gen = torch.Generator().manual_seed(2)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
            module.weight.data.copy_(1 + 0.2 * torch.randn(n, generator=gen))
            module.bias.data.copy_(0.2 * torch.randn(n, generator=gen))
    return model


def hf_outputs(model: nn.Module, inputs: torch.Tensor):
    """The model's logits; an encoder-decoder reads ``inputs`` on both sides."""
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=inputs, decoder_input_ids=inputs).logits
        return model(inputs).logits
