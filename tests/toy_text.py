"""Hugging Face text models from small configs (seeded, eval, no downloads), loaded as ``toy_text:NAME``."""

from __future__ import annotations

import torch
from torch import nn


def bert() -> nn.Module:
    """A 2-layer BERT encoder: ``input_ids`` + ``attention_mask`` (int64 [B, T]) -> ``last_hidden_state`` and
    ``pooler_output``. Its ``token_type_ids`` buffer, expanded to the input shape, is a constant subgraph."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    return BertModel(config).eval()


class _LogitsOnly(nn.Module):
    """GPT-2 returning its logits only (no cache, no attention mask: the causal mask is built inside)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids, use_cache=False).logits


def gpt2() -> nn.Module:
    """A 2-layer GPT-2 LM head on ``input_ids`` only (int64 [B, T]) -> logits [B, T, vocab]."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=1000, n_positions=64)
    return _LogitsOnly(GPT2LMHeadModel(config).eval()).eval()


class FirstDifferences(nn.Module):
    """Token ids -> embeddings -> their differences along the sequence (``torch.diff``) -> a linear head. The
    TorchScript exporter has no ``aten::diff`` at opset 17; the dynamo exporter decomposes it (``--exporter auto``
    falls back to it)."""

    def __init__(self, vocab: int = 100) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 6)
        self.head = nn.Linear(6, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.diff(self.embed(ids), dim=1))


def first_differences() -> nn.Module:
    torch.manual_seed(0)
    return FirstDifferences().eval()
