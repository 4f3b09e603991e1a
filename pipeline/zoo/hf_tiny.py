"""Tiny randomly initialized ``transformers`` models of every architecture the graph builders
recognize, for tests and benchmarks on checkpoints this project did not write (``transformers`` is
in the test and bench extras)."""
from __future__ import annotations

import torch
from torch import nn

#: weights drawn wider than transformers' default (0.02), so that attention is far from uniform and
#: a broken wiring shows in the outputs
HF_SMALL = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                max_position_embeddings=40, initializer_range=0.4)


def tiny_models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """name -> (a tiny randomly initialized ``transformers`` model in float64 and eval mode, a batch
    of its inputs): the architectures the graph builders recognize. Silences ``transformers``'
    progress bars (tests and benches save these models many times)."""
    import transformers as T

    T.utils.logging.disable_progress_bar()
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


def logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The model's logits; an encoder-decoder reads ``inputs`` on both sides."""
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=inputs, decoder_input_ids=inputs).logits
        return model(inputs).logits
