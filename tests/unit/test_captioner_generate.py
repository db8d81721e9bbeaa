"""The KV-cached generator equals a plain no-cache loop over open_clip's own forward."""
from __future__ import annotations

import open_clip
import pytest
import torch

from dalle3.captioner.decoding import LogitsProcessor, SpecialIds
from dalle3.captioner.generate import CaptionGenerator, DecodeOptions, generate, strip_special, warp_and_sample
from dalle3.captioner.kv import CocaKV
from dalle3.captioner.model import build_captioner, init_text_decoder, pad_token_id, register_model_config
from dalle3.config.captioner import CaptionerConfig
from dalle3.config.convert import to_dataclass
from dalle3.config import compose
from dalle3.config.captioner import CaptionerDecodeConfig

SMALL = ["captioner.arch.image_size=32", "captioner.arch.vision_layers=1", "captioner.arch.text_layers=2",
         "captioner.arch.decoder_layers=2", "captioner.arch.attn_pooler_queries=9", "captioner.context_length=40"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cap = build_captioner(to_dataclass(CaptionerConfig, compose(SMALL).captioner))
    return cap.model.eval(), SpecialIds.from_tokenizer(cap.tokenizer), cap.tokenizer


@pytest.fixture(scope="module")
def tiny_patch():
    """The tiny preset with open_clip's patch embedding: random images give more varied captions."""
    torch.manual_seed(0)
    cap = build_captioner(to_dataclass(CaptionerConfig, compose([*SMALL, "captioner.arch.stem=patch"]).captioner))
    return cap.model.eval(), SpecialIds.from_tokenizer(cap.tokenizer), cap.tokenizer


@pytest.fixture(scope="module")
def b32_shaped():
    """coca_ViT-B-32's structure (BPE vocabulary, embed_cls, attentional pooler), shrunk."""
    cfg = open_clip.get_model_config("coca_ViT-B-32")
    cfg["embed_dim"] = 64
    cfg["vision_cfg"].update(image_size=64, patch_size=16, width=64, layers=2, head_width=32)
    for key in ("text_cfg", "multimodal_cfg"):
        cfg[key].update(width=64, heads=4, layers=2)
    register_model_config("dalle3_test_coca_b32_shaped", cfg)
    torch.manual_seed(1)
    model = open_clip.create_model("dalle3_test_coca_b32_shaped")
    init_text_decoder(model.text_decoder)
    tok = open_clip.get_tokenizer("coca_ViT-B-32")
    return model.eval(), SpecialIds.from_tokenizer(tok), tok


def reference_greedy(model, images, ids: SpecialIds, max_new: int) -> list[list[int]]:
    """The straightforward loop: re-run open_clip's CoCa.forward over the whole prefix each step."""
    out = torch.full((images.shape[0], 1), ids.sot, dtype=torch.long)
    with torch.no_grad():
        latent, embs = model._encode_image(images)
        for _ in range(max_new):
            logits = model(images, out, image_latent=latent, image_embs=embs, output_labels=False)["logits"][:, -1]
            logits[:, list(ids.suppress)] = float("-inf")
            out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
    return [strip_special(row.tolist(), ids) for row in out]


@pytest.mark.parametrize("name, size, max_new", [("tiny", 32, 24), ("b32_shaped", 64, 20)])
def test_cached_greedy_equals_no_cache_loop_on_every_image(request, name, size, max_new):
    model, ids, _ = request.getfixturevalue(name)
    torch.manual_seed(2)
    images = torch.randn(5, 3, size, size)
    want = reference_greedy(model, images, ids, max_new)
    got = generate(model, images, ids, DecodeOptions(max_new_tokens=max_new))
    assert [strip_special(row.tolist(), ids) for row in got] == want
    assert got.shape[1] <= max_new + 1 and (got[:, 0] == ids.sot).all()


def test_incremental_logits_match_forward_with_pad_tokens_in_the_prefix(b32_shaped):
    """open_clip's legacy CLS padding mask (key j masked when token j-1 is pad) is reproduced."""
    model, ids, _ = b32_shaped
    images = torch.randn(3, 3, 64, 64)
    text = torch.randint(1, 1000, (3, 10))
    text[:, 0] = ids.sot
    text[1, 4] = 0
    text[2, 2:4] = 0
    kv = CocaKV(model)
    with torch.no_grad():
        want = model(images, text, output_labels=False)["logits"]
        state = kv.new_state(kv.encode_images(images), 12)
        got = torch.cat([kv.forward(text[:, :4], state)] + [kv.forward(text[:, i:i + 1], state) for i in range(4, 10)],
                        dim=1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def _end_steps(out: torch.Tensor, eot: int) -> list[int]:
    return [(row == eot).nonzero()[0, 0].item() if (row == eot).any() else out.shape[1] for row in out]


def test_finished_captions_leave_the_batch(tiny_patch):
    model, ids, _ = tiny_patch
    torch.manual_seed(5)
    images = torch.randn(8, 3, 32, 32)
    dec = model.text_decoder
    saved = [t.detach().clone() for t in (dec.ln_final.weight, dec.ln_final.bias, dec.text_projection)]
    kv = CocaKV(model)
    rows_per_step = []
    forward = kv.forward

    def counting(tokens, state):
        rows_per_step.append(tokens.shape[0])
        return forward(tokens, state)

    try:
        with torch.no_grad():  # LayerNorm channel 0 becomes a constant 1: a bias on the end token's logit
            dec.ln_final.weight[0], dec.ln_final.bias[0] = 0.0, 1.0
            dec.text_projection[0] = 0.0
        for bias in torch.arange(0.0, 12.0, 0.5):  # raise it until captions end at different steps
            with torch.no_grad():
                dec.text_projection[0, ids.eot] = bias
            ended = _end_steps(generate(model, images, ids, DecodeOptions(max_new_tokens=30)), ids.eot)
            if len({e for e in ended if 1 < e < 31}) >= 3:
                break
        kv.forward = counting
        out = generate(model, images, ids, DecodeOptions(max_new_tokens=30), kv=kv)
    finally:
        with torch.no_grad():
            for t, v in zip((dec.ln_final.weight, dec.ln_final.bias, dec.text_projection), saved):
                t.copy_(v)
    ended = _end_steps(out, ids.eot)
    assert len({e for e in ended if e < out.shape[1]}) >= 3  # the test exercises several drop points
    assert rows_per_step == sorted(rows_per_step, reverse=True) and rows_per_step[-1] < 8
    for step, rows in enumerate(rows_per_step):  # a row is computed only while its caption is open
        assert rows == sum(end > step for end in ended)
    assert all((row[end + 1:] == ids.pad).all() for row, end in zip(out, ended) if end < out.shape[1])


def test_min_and_max_new_tokens(tiny):
    model, ids, _ = tiny
    images = torch.randn(4, 3, 32, 32)
    out = generate(model, images, ids, DecodeOptions(max_new_tokens=12, min_new_tokens=12))
    assert out.shape == (4, 13) and not (out == ids.eot).any()


def test_beam_of_one_without_length_penalty_is_greedy(tiny):
    model, ids, _ = tiny
    images = torch.randn(5, 3, 32, 32)
    greedy = generate(model, images, ids, DecodeOptions(max_new_tokens=20))
    beam = generate(model, images, ids, DecodeOptions(mode="beam", num_beams=1, length_penalty=0.0,
                                                      max_new_tokens=20))
    assert [strip_special(r.tolist(), ids) for r in beam] == [strip_special(r.tolist(), ids) for r in greedy]


def test_beam_search_scores_at_least_greedy(tiny):
    """With length_penalty=0 the beam's caption is at least as likely as the greedy one."""
    model, ids, _ = tiny
    images = torch.randn(4, 3, 32, 32)
    opts = dict(max_new_tokens=15, min_new_tokens=3)
    greedy = generate(model, images, ids, DecodeOptions(**opts))
    beam = generate(model, images, ids, DecodeOptions(mode="beam", num_beams=4, length_penalty=0.0, **opts))

    def logprob(seq, i):
        toks = seq[: 1 + len(strip_special(seq.tolist(), ids)) + 1].unsqueeze(0)  # through the end token
        with torch.no_grad():
            logits = model(images[i:i + 1], toks[:, :-1], output_labels=False)["logits"][0]
        proc = LogitsProcessor(DecodeOptions(**opts), ids, logits.shape[-1], logits.device)
        lp = torch.stack([proc(logits[t:t + 1], t, None)[0] for t in range(logits.shape[0])]).log_softmax(-1)
        return lp.gather(1, toks[0, 1:, None]).sum().item()

    for i in range(4):
        assert logprob(beam[i], i) >= logprob(greedy[i], i) - 1e-4


def test_sampling_is_seeded_and_top_k_one_is_greedy(tiny):
    model, ids, _ = tiny
    images = torch.randn(4, 3, 32, 32)
    opts = DecodeOptions(mode="sample", top_p=0.9, temperature=1.5, seed=3, max_new_tokens=20)
    a, b = generate(model, images, ids, opts), generate(model, images, ids, opts)
    assert torch.equal(a, b)
    k1 = generate(model, images, ids, DecodeOptions(mode="sample", top_k=1, max_new_tokens=20))
    greedy = generate(model, images, ids, DecodeOptions(max_new_tokens=20))
    assert torch.equal(k1, greedy)


def test_logits_processing_matches_transformers():
    from transformers import RepetitionPenaltyLogitsProcessor, TopPLogitsWarper

    torch.manual_seed(0)
    logits, seen_ids = torch.randn(3, 50), torch.randint(0, 50, (3, 7))
    ids = SpecialIds(sot=1, eot=2, pad=0)
    opts = DecodeOptions(repetition_penalty=1.7)
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, seen_ids, True)
    ours = LogitsProcessor(opts, ids, 50, logits.device)(logits, step=5, seen=seen)
    torch.testing.assert_close(ours, RepetitionPenaltyLogitsProcessor(1.7)(seen_ids, logits.clone()))
    # nucleus: the kept set equals HF's TopPLogitsWarper's
    hf = TopPLogitsWarper(0.8)(seen_ids, logits.clone())
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        draw = warp_and_sample(logits, DecodeOptions(top_p=0.8), gen)
        assert torch.isfinite(hf.gather(1, draw[:, None])).all()


def test_caption_generator_returns_strings(tiny):
    model, _, tok = tiny
    captions = CaptionGenerator(model, tok, DecodeOptions(max_new_tokens=8))(torch.rand(2, 3, 32, 32))
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_decode_options_are_the_decode_config():
    assert DecodeOptions() == DecodeOptions.from_config(CaptionerDecodeConfig())
    assert isinstance(DecodeOptions(), CaptionerDecodeConfig)
    assert vars(DecodeOptions()) == vars(CaptionerDecodeConfig())  # one set of fields and defaults
    node = compose(["captioner.decode.mode=beam", "captioner.decode.num_beams=3"]).captioner.decode
    opts = DecodeOptions.from_config(node, max_new_tokens=7)
    assert (opts.mode, opts.num_beams, opts.max_new_tokens, opts.top_p) == ("beam", 3, 7, 1.0)
    assert DecodeOptions.from_config({"seed": 5}).seed == 5


def test_pad_token_id_of_our_and_open_clips_tokenizers(tiny, b32_shaped):
    assert pad_token_id(tiny[2]) == tiny[2].pad_token_id == 0
    assert pad_token_id(b32_shaped[2]) == 0  # open_clip's BPE tokenizer has no pad_token_id: it pads with 0
    assert SpecialIds.from_tokenizer(b32_shaped[2]).suppress == (b32_shaped[2].sot_token_id,)
