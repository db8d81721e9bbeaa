"""Caption decoding speed: our KV-cached decoder vs open_clip's ``CoCa.generate()``.

Usage: ``python benchmarks/caption_decode.py [--weights EXPORT_DIR] [--threads N] [--repeats R]``

One run on the same weights and images, batch 16 and 64, 32 and 64 new tokens:

* open_clip greedy = ``generate(generation_type="top_k", top_k=1)`` (sampling from a
  one-token distribution), with ``min_seq_len`` so the end token cannot stop it early and
  ``seq_len = 1 + new tokens`` (open_clip forces the end token as the last one);
* ours greedy with ``min_new_tokens = max_new_tokens`` (the same work: one decoder step
  per new token) and ours beam search (4 beams);
* open_clip beam search, if it runs (it needs ``transformers.BeamSearchScorer``, which
  transformers 5 removed).

open_clip refuses to generate with transformers 5.x; its check is patched here, in this
process only. Weights: an export folder (``--weights``), else a randomly initialised tiny
captioner (80-token context) whose pad/start/unknown logits are pinned low (our decoder
never emits them; open_clip has no way to forbid them, and would stop at a pad).

"Identical" compares, per image, the tokens both decoders chose freely (all but
open_clip's forced end token). The last line is JSON for the record.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from dalle3.captioner.generate import DecodeOptions, SpecialIds, generate
from dalle3.captioner.kv import CocaKV
from dalle3.captioner.model import build_captioner
from dalle3.config.captioner import CaptionerConfig
from dalle3.config.convert import to_dataclass
from dalle3.config import compose


def patch_open_clip_generate() -> None:
    """Let ``CoCa.generate`` run top-k/top-p under transformers 5 (this process only)."""
    import open_clip.coca_model as cm
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    cm._has_transformers = True
    cm.GENERATION_TYPES.update(top_k=TopKLogitsWarper, top_p=TopPLogitsWarper)


def pin_special_tokens(model: torch.nn.Module, ids: list[int]) -> None:
    """Make ``ids`` never the argmax: one LayerNorm channel becomes a constant 1 and the
    projection gives it -30 towards those ids only (a valid CoCa, one channel narrower)."""
    dec = model.text_decoder
    with torch.no_grad():
        dec.ln_final.weight[0], dec.ln_final.bias[0] = 0.0, 1.0
        dec.text_projection[0] = 0.0
        dec.text_projection[0, ids] = -30.0


def load_model(weights: str | None):
    if weights:
        from dalle3.captioner.export import load_exported

        cap = load_exported(weights)
    else:
        torch.manual_seed(0)
        cap = build_captioner(to_dataclass(CaptionerConfig, compose([]).captioner))
    ids = SpecialIds.from_tokenizer(cap.tokenizer)
    if not weights:
        pin_special_tokens(cap.model, [ids.pad, *ids.suppress])
    return cap.model.eval(), ids, cap.model_cfg["vision_cfg"]["image_size"]


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def open_clip_greedy(model, images, ids: SpecialIds, new: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(images, generation_type="top_k", top_k=1, seq_len=new + 1, min_seq_len=new,
                              sot_token_id=ids.sot, eos_token_id=ids.eot, pad_token_id=ids.pad,
                              fixed_output_length=True)


def open_clip_beam(model, images, ids: SpecialIds, new: int):
    try:
        with torch.no_grad():
            return model.generate(images, generation_type="beam_search", num_beams=4, num_beam_groups=1,
                                  seq_len=new + 1, min_seq_len=new, sot_token_id=ids.sot, eos_token_id=ids.eot,
                                  pad_token_id=ids.pad)
    except Exception as exc:  # transformers 5 has no BeamSearchScorer
        return f"{type(exc).__name__}: {exc}"


def run_case(model, kv, ids, images, new: int, repeats: int) -> dict:
    with torch.inference_mode():
        t_enc, _ = timed(lambda: kv.encode_images(images), repeats)  # shared by both decoders
    t_oc, ref = timed(lambda: open_clip_greedy(model, images, ids, new), repeats)
    greedy = DecodeOptions(max_new_tokens=new, min_new_tokens=new)
    t_ours, ours = timed(lambda: generate(model, images, ids, greedy, kv=kv), repeats)
    beam = DecodeOptions(mode="beam", num_beams=4, max_new_tokens=new, min_new_tokens=new)
    t_beam, _ = timed(lambda: generate(model, images, ids, beam, kv=kv), 1)
    t_oc_beam, oc_beam = timed(lambda: open_clip_beam(model, images, ids, new), 1)
    free = new - 1  # open_clip forces the end token as its last new token
    same = (ref[:, 1:1 + free] == ours[:, 1:1 + free]).all(dim=1)
    return {"batch": images.shape[0], "new_tokens": new, "image_encode_s": round(t_enc, 3),
            "open_clip_greedy_s": round(t_oc, 3),
            "ours_greedy_s": round(t_ours, 3), "ours_beam4_s": round(t_beam, 3),
            "open_clip_beam4_s": round(t_oc_beam, 3) if isinstance(oc_beam, torch.Tensor) else None,
            "open_clip_beam_error": None if isinstance(oc_beam, torch.Tensor) else oc_beam[:120],
            "speedup_greedy": round(t_oc / t_ours, 2), "identical": int(same.sum()), "images": int(same.numel())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=None, help="export folder of a trained captioner")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=1, help="best of R timings")
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--tokens", default="32,64")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    patch_open_clip_generate()
    model, ids, size = load_model(args.weights)
    kv = CocaKV(model)
    torch.manual_seed(1)
    pool = torch.randn(max(int(b) for b in args.batches.split(",")), 3, size, size)
    rows = []
    for b in (int(x) for x in args.batches.split(",")):
        for new in (int(x) for x in args.tokens.split(",")):
            rows.append(run_case(model, kv, ids, pool[:b], new, args.repeats))
            r = rows[-1]
            print(f"batch {b:3d} new {new:3d}: image encode {r['image_encode_s']:.2f} s (in both) | open_clip "
                  f"greedy {r['open_clip_greedy_s']:7.2f} s | ours greedy {r['ours_greedy_s']:6.2f} s "
                  f"({r['speedup_greedy']:5.1f}x) | ours beam4 {r['ours_beam4_s']:6.2f} s | open_clip beam4 "
                  f"{r['open_clip_beam4_s'] or 'fails'} | identical {r['identical']}/{r['images']}", flush=True)
    if rows[0]["open_clip_beam_error"]:
        print(f"open_clip beam search cannot run here: {rows[0]['open_clip_beam_error']}")
    at64 = [r for r in rows if r["new_tokens"] == 64] or rows
    speedup = sum(r["open_clip_greedy_s"] for r in at64) / sum(r["ours_greedy_s"] for r in at64)
    identical = sum(r["identical"] for r in rows) / sum(r["images"] for r in rows)
    print(json.dumps({"benchmark": "caption_decode", "speedup_64": round(speedup, 2), "identical": round(identical, 4),
                      "threads": torch.get_num_threads(), "weights": args.weights or "random tiny", "cases": rows}))


if __name__ == "__main__":
    main()
