"""The ``Upsampler`` interface and its transformers implementation.

:class:`Upsampler` turns requests into raw answers (:meth:`Upsampler.generate`); the shared
:meth:`Upsampler.upsample` runs every answer through the guards (:mod:`dalle3.upsample.guards`),
counts the fallbacks by reason and logs each one, so no implementation can skip them.

:class:`HFUpsampler` wraps any transformers causal or seq2seq LM, by hub name or local
folder (``from_pretrained``). A tokenizer with a chat template gets our system instruction
and few-shot turns through ``apply_chat_template``; one without gets
``upsample.prompt_template``. The world's LM (:mod:`dalle3.upsample.module`) is loaded this
same way from its save_pretrained folder.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from dalle3.config.convert import to_dataclass
from dalle3.config.upsample import UpsampleConfig, validate_upsample
from dalle3.upsample.guards import Guarded, guard
from dalle3.upsample.instruction import chat_messages, without_system_role
from dalle3.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class UpsampleResult:
    items: list[Guarded]
    "One per request, in order."
    fallbacks: Counter = field(default_factory=Counter)
    "Refused answers by reason (the request went to the text encoder as it was)."
    seconds: float = 0.0
    "Wall time of generation and guards."

    @property
    def texts(self) -> list[str]:
        """What the text encoder gets, one per request."""
        return [g.text for g in self.items]

    def summary(self) -> dict:
        n = len(self.items)
        return {"prompts": n, "upsampled": n - sum(self.fallbacks.values()), "fallbacks": dict(self.fallbacks),
                "capped": sum(g.capped for g in self.items), "seconds": round(self.seconds, 2)}


def token_counter(tokenizer: Any):
    """Tokens of a text in ``tokenizer`` (the LDM text encoder's), start and end tokens included."""
    return lambda text: len(tokenizer(text, truncation=False)["input_ids"])


class Upsampler(ABC):
    """Rewrites short requests into descriptive captions; the guards are applied by :meth:`upsample`."""

    def __init__(self, cfg: Any = None):
        self.cfg = to_dataclass(UpsampleConfig, cfg if cfg is not None else UpsampleConfig())

    @abstractmethod
    def generate(self, prompts: Sequence[str]) -> list[str]:
        """The model's raw answer to each request (no clean-up)."""

    def upsample(self, prompts: Sequence[str], encoder_tokenizer: Any = None) -> UpsampleResult:
        """Guarded descriptions of ``prompts``.

        Args:
            encoder_tokenizer: the LDM text encoder's tokenizer; answers are capped at
                ``upsample.guards.max_tokens`` of its tokens (default its ``model_max_length``).
        """
        t0, g = time.time(), self.cfg.guards
        raw = self.generate(list(prompts)) if prompts else []
        count = token_counter(encoder_tokenizer) if encoder_tokenizer is not None else None
        max_tokens = g.max_tokens or (getattr(encoder_tokenizer, "model_max_length", None) if count else None)
        items = [guard(p, r, min_words=g.min_words, max_words=g.max_words, count_tokens=count,
                       max_tokens=max_tokens, check_content=g.check_content) for p, r in zip(prompts, raw)]
        result = UpsampleResult(items, Counter(i.fallback for i in items if i.fallback), time.time() - t0)
        for item in items:
            if item.fallback:
                log.info("upsample fallback (%s: %s) for %r; answer was %r", item.fallback, item.detail,
                         item.prompt, item.raw[:200])
        log.info("upsample: %d prompts, %d fallbacks %s, %d capped, %.1f s", len(items),
                 sum(result.fallbacks.values()), dict(result.fallbacks), result.summary()["capped"], result.seconds)
        return result


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, name)


class HFUpsampler(Upsampler):
    """Any transformers LM as an upsampler.

    Args:
        model: a ``PreTrainedModel`` (causal or seq2seq), in eval mode on its device.
        tokenizer: its tokenizer.
        cfg: an ``UpsampleConfig`` (dataclass, DictConfig or dict).
    """

    def __init__(self, model: Any, tokenizer: Any, cfg: Any = None):
        super().__init__(cfg)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False)) if self.cfg.kind == "auto" \
            else self.cfg.kind == "seq2seq"
        self.chat = {"always": True, "never": False}.get(self.cfg.chat, bool(getattr(tokenizer, "chat_template", None)))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Decoder-only models continue the last position: requests are padded on the left.
        self.tokenizer.padding_side = "right" if self.seq2seq else "left"

    @classmethod
    def from_pretrained(cls, name_or_path: str, cfg: Any = None) -> "HFUpsampler":
        """Load ``name_or_path`` (hub name or local folder) with the device and dtype of ``cfg``."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        c = to_dataclass(UpsampleConfig, cfg if cfg is not None else UpsampleConfig(), model=name_or_path)
        validate_upsample(c)
        remote = {"trust_remote_code": c.trust_remote_code}
        config = AutoConfig.from_pretrained(name_or_path, **remote)
        seq2seq = c.kind == "seq2seq" or (c.kind == "auto" and getattr(config, "is_encoder_decoder", False))
        device = _device(c.device)
        auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = auto.from_pretrained(name_or_path, dtype=_dtype(c.dtype, device), **remote).to(device)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **remote)
        log.info("upsampler %s: %s (%s, %s) on %s", c.name, name_or_path, "seq2seq" if seq2seq else "causal",
                 "chat" if getattr(tokenizer, "chat_template", None) and c.chat != "never" else "plain", device)
        return cls(model, tokenizer, c)

    @classmethod
    def from_config(cls, cfg: Any) -> "HFUpsampler":
        """The upsampler of an ``upsample`` block (``upsample.model``); a missing local folder fails in one line."""
        check_model_exists(str(cfg.model))
        return cls.from_pretrained(str(cfg.model), cfg)

    def model_input(self, prompt: str) -> str:
        """The text the model reads for ``prompt``: its chat template over our conversation, or the plain template."""
        if not self.chat:
            return self.cfg.prompt_template.format(prompt=prompt)
        messages = chat_messages(prompt, self.cfg.system_prompt, self.cfg.few_shot)
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # jinja's TemplateError: "System role not supported" and the like
            log.info("chat template refused a system turn (%s); the instruction opens the first user turn", err)
            return self.tokenizer.apply_chat_template(without_system_role(messages), tokenize=False,
                                                      add_generation_prompt=True)

    def _generate_kwargs(self) -> dict:
        g = self.cfg.generation
        kw = {"max_new_tokens": g.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id,
              "repetition_penalty": g.repetition_penalty}
        if g.temperature > 0:
            kw.update(do_sample=True, temperature=g.temperature, top_p=g.top_p)
        else:  # greedy: unset the model's own sampling defaults so transformers does not warn about them
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw

    @torch.no_grad()
    def generate(self, prompts: Sequence[str]) -> list[str]:
        g, device = self.cfg.generation, self.model.device
        texts = [self.model_input(p) for p in prompts]
        out: list[str] = []
        for i in range(0, len(texts), g.batch_size):
            # A chat template writes the model's own start token; the plain template needs the tokenizer's.
            enc = self.tokenizer(texts[i:i + g.batch_size], return_tensors="pt", padding=True,
                                 add_special_tokens=not self.chat).to(device)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(g.seed + i)
                ids = self.model.generate(**enc, **self._generate_kwargs())
            new = ids if self.seq2seq else ids[:, enc["input_ids"].shape[1]:]
            out += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return out


def check_model_exists(model: str, key: str = "upsample.model") -> None:
    """A path-like ``model`` (absolute, relative with a folder, or existing) must be a folder; a hub name
    (``org/name``) is left to transformers."""
    import os

    from dalle3.config.validate import ConfigError

    local = model.startswith((".", "/", "~")) or model.count("/") >= 2 or os.path.exists(model)
    if local and not os.path.isdir(os.path.expanduser(model)):
        raise ConfigError(f"{key}={model!r} is not a folder; allowed: a hub name (e.g. Qwen/Qwen2.5-1.5B-Instruct) or "
                          "a local save_pretrained folder (the world's: `dalle3-train stage=upsample`)")


def build_upsampler(cfg: Any) -> Upsampler:
    """The upsampler of a composed root config's ``upsample`` block."""
    return HFUpsampler.from_config(cfg.upsample if hasattr(cfg, "upsample") else cfg)
