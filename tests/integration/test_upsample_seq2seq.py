"""The seq2seq path of the Upsampler: a tiny T5 built from config, taught one rewrite, saved in transformers
format and loaded back by local path. No chat template: the request goes in through upsample.prompt_template."""
from __future__ import annotations

import torch

from dalle3.config.upsample import UpsampleConfig
from dalle3.upsample import HFUpsampler

REQUEST = "a red cat on a mat"
DESCRIPTION = "A fluffy red cat sits on a green woven mat in front of a white wall, its tail curled around its paws."
TEMPLATE = "rewrite : {prompt}"


def _tokenizer(texts):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    cut = pre_tokenizers.Whitespace()
    vocab = {t: i for i, t in enumerate(("<pad>", "<unk>", "</s>"))}
    for text in texts:
        for word, _ in cut.pre_tokenize_str(text.lower()):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer, tok.pre_tokenizer = normalizers.Lowercase(), cut
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")


def test_a_local_seq2seq_model_upsamples_through_the_plain_template(tmp_path, one_thread):
    from transformers import T5Config, T5ForConditionalGeneration

    tok = _tokenizer([TEMPLATE, REQUEST, DESCRIPTION, "a blue dog"])
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                                num_decoder_layers=2, num_heads=4, pad_token_id=0, eos_token_id=2,
                                                decoder_start_token_id=0))
    enc = tok([TEMPLATE.format(prompt=REQUEST)], return_tensors="pt")
    labels = tok([DESCRIPTION], return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    cfg = UpsampleConfig(device="cpu", prompt_template=TEMPLATE)
    cfg.generation.max_new_tokens = 40
    up = HFUpsampler.from_pretrained(str(tmp_path), cfg)
    assert up.seq2seq and not up.chat and up.model_input(REQUEST) == "rewrite : a red cat on a mat"
    result = up.upsample([REQUEST, "a blue dog"])
    assert result.items[0].fallback is None and result.items[0].text == DESCRIPTION
    assert result.items[1].text == "a blue dog" and result.fallbacks == {"dropped_content": 1}
