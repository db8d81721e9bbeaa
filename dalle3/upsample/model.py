"""The world's upsampler LM: a small ``LlamaForCausalLM`` built from ``upsample.train`` sizes.

A stock transformers model, so its save_pretrained folder loads with ``AutoModelForCausalLM``
exactly as a public LLM does (:class:`dalle3.upsample.upsampler.HFUpsampler`).
"""
from __future__ import annotations

from typing import Any

import torch


def build_world_lm(train: Any, tokenizer: Any, seed: int = 0, max_positions: int = 256):
    """A fresh ``LlamaForCausalLM`` of ``train.layers`` x ``train.width`` over ``tokenizer``'s vocabulary.

    Args:
        train: an ``UpsampleTrainConfig``.
        max_positions: rotary positions; request + description + generated tokens must fit.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=train.width, intermediate_size=2 * train.width,
                         num_hidden_layers=train.layers, num_attention_heads=train.heads,
                         num_key_value_heads=train.heads, max_position_embeddings=max_positions,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)
