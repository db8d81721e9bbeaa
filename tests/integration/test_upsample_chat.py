"""The chat-template path of the Upsampler, end to end, on a tiny chat model saved in transformers format.

The model is a 2-block LlamaForCausalLM built from config with a word-level tokenizer whose
``chat_template`` is set, taught in a few dozen steps to answer one request with a chatty
reply; it is saved with save_pretrained and loaded back by local path, as a hub model would be.
"""
from __future__ import annotations

import re

import pytest
import torch

from dalle3.config.upsample import UpsampleConfig
from dalle3.upsample import HFUpsampler
from dalle3.upsample.instruction import FEW_SHOT, SYSTEM_PROMPT, chat_messages

TEMPLATE = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [end] {% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")
NO_SYSTEM = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
             + TEMPLATE)
REQUEST = "a red cat on a mat"
DESCRIPTION = "A fluffy red cat sits on a green woven mat in front of a white wall, its tail curled around its paws."
REPLY = f'Sure! Here is the description: "{DESCRIPTION}"'
OTHER = "a blue dog"


def _tokenizer(texts, template):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    cut = pre_tokenizers.Whitespace()
    vocab = {t: i for i, t in enumerate(("<pad>", "<unk>", "<bos>", "<eos>"))}
    for text in texts:
        for word, _ in cut.pre_tokenize_str(text.lower()):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer, tok.pre_tokenizer = normalizers.Lowercase(), cut
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>")
    fast.chat_template = template
    return fast


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory, one_thread):
    """A tiny chat model that answers REQUEST with REPLY, saved in transformers format."""
    from transformers import LlamaConfig, LlamaForCausalLM

    messages = chat_messages(REQUEST)
    corpus = [SYSTEM_PROMPT, REPLY, REQUEST, OTHER, "[system] [user] [assistant] [end]"] + [t for p in FEW_SHOT for t in p]
    tok = _tokenizer(corpus, TEMPLATE)
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head = tok(prompt, add_special_tokens=False)["input_ids"]
    tail = tok(f" {REPLY}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([head + tail])
    labels = torch.tensor([[-100] * len(head) + tail])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                         max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    out = tmp_path_factory.mktemp("tiny_chat")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _cfg(**generation):
    cfg = UpsampleConfig(device="cpu")
    cfg.generation.max_new_tokens = 40
    for k, v in generation.items():
        setattr(cfg.generation, k, v)
    return cfg


def test_the_chat_template_carries_our_instruction_and_few_shot_turns(chat_model_dir):
    up = HFUpsampler.from_pretrained(str(chat_model_dir), _cfg())
    assert up.chat and not up.seq2seq
    text = up.model_input(REQUEST)
    assert text.startswith("<bos>[system] " + SYSTEM_PROMPT + " [end] ")
    assert text.count("[user]") == len(FEW_SHOT) + 1 and text.count("[assistant]") == len(FEW_SHOT) + 1
    assert text.endswith(f"[user] {REQUEST} [end] [assistant]")


def test_a_local_chat_model_upsamples_through_the_guards(chat_model_dir):
    up = HFUpsampler.from_pretrained(str(chat_model_dir), _cfg())
    result = up.upsample([REQUEST, OTHER])  # batched: left padding must not change the first answer
    first, second = result.items
    assert "sure" in first.raw.lower()  # the model's own chatter ...
    assert first.fallback is None and first.text == DESCRIPTION  # ... never reaches the text encoder
    assert second.fallback is not None and second.text == OTHER  # an answer without "blue dog" is refused
    assert sum(result.fallbacks.values()) == 1 and result.summary()["upsampled"] == 1
    alone = up.upsample([REQUEST]).items[0]
    assert alone.raw == first.raw


def test_sampling_is_reproducible_from_the_seed(chat_model_dir):
    a = HFUpsampler.from_pretrained(str(chat_model_dir), _cfg(temperature=1.5, top_p=0.95, seed=3))
    b = HFUpsampler.from_pretrained(str(chat_model_dir), _cfg(temperature=1.5, top_p=0.95, seed=3))
    prompts = [OTHER, "a green cat", REQUEST]
    assert a.generate(prompts) == b.generate(prompts)
    c = HFUpsampler.from_pretrained(str(chat_model_dir), _cfg(temperature=1.5, top_p=0.95, seed=4))
    assert any(x != y for x, y in zip(a.generate(prompts * 2), c.generate(prompts * 2)))


def test_a_template_without_a_system_role_gets_the_instruction_in_the_first_user_turn(chat_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_model_dir)
    tok.chat_template = NO_SYSTEM
    tok.save_pretrained(tmp_path)
    for f in chat_model_dir.iterdir():
        if f.suffix in (".json", ".safetensors") and not (tmp_path / f.name).exists():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    text = HFUpsampler.from_pretrained(str(tmp_path), _cfg()).model_input(REQUEST)
    assert "[system]" not in text
    assert re.match(r"<bos>\[user\] " + re.escape(SYSTEM_PROMPT) + r"\n\n" + re.escape(FEW_SHOT[0][0]), text)
