"""Typed config of prompt upsampling (`upsample.*`, `dalle3-train stage=upsample`).

An LLM rewrites a short prompt into one descriptive caption before the LDM sees it
(DALL-E 3, section 3 and appendix C). ``upsample.model`` is any transformers causal or
seq2seq LM, by hub name or local path; the default is the world's own small LM that
``stage=upsample`` trains. Owned by :mod:`dalle3.upsample`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from dalle3.config.validate import ConfigError, check_choice, check_positive, check_range
from dalle3.config.world import DSC_ORDERS

MODEL_KINDS = ("auto", "causal", "seq2seq")
"Allowed ``upsample.kind`` values (auto: seq2seq when the model config is an encoder-decoder)."
CHAT_MODES = ("auto", "always", "never")
"Allowed ``upsample.chat`` values (auto: the chat template when the tokenizer has one)."
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
UPSAMPLE_KINDS = ("ssc", "alt")
"Prompt kinds the evaluation upsamples: the short ones (DSC prompts are descriptive already)."


@dataclass
class GenerationConfig:
    temperature: float = 0.0
    "Sampling temperature; 0: greedy decoding (the world LM). Instruction-tuned LLMs: 0.7."
    top_p: float = 1.0
    "Nucleus sampling mass (with temperature > 0). Instruction-tuned LLMs: 0.9."
    max_new_tokens: int = 160
    "Most tokens the LM writes per prompt (80 words of English are about 110 tokens)."
    seed: int = 0
    "Seed of the sampling; batch i draws with seed + i, so the same prompts and batch size give the same text."
    batch_size: int = 16
    "Prompts per generate() call (left-padded for decoder-only models)."
    repetition_penalty: float = 1.0
    "transformers' repetition penalty (1.0: off)."


@dataclass
class GuardConfig:
    min_words: int = 6
    "An answer of fewer words is too short: the original prompt is used instead."
    max_words: int = 80
    "Answers are cut (at a sentence end where possible) to this many words (the paper's 15-80 word instruction)."
    max_tokens: Optional[int] = None
    "Most tokens of the LDM text encoder's own tokenizer (start and end included); null: its model_max_length."
    check_content: bool = True
    "Fall back when the answer drops a content word or a stated fact of the request."


@dataclass
class UpsampleTrainConfig:
    layers: int = 2
    "Decoder blocks of the world LM (a LlamaForCausalLM); 2 learn to copy the prompt in fewer steps than 4."
    width: int = 128
    "Hidden size of the world LM."
    heads: int = 4
    "Attention heads of the world LM."
    max_length: int = 128
    "Most tokens of one (prompt, description) training sequence; longer ones are dropped."
    steps: int = 2400
    "Optimizer steps (about 0.1 s each on one thread of a busy 2-core CPU)."
    batch_size: int = 32
    "Sequences per step."
    lr: float = 3.0e-3
    "Peak AdamW learning rate (linear warm-up, cosine decay to a tenth)."
    warmup_steps: int = 60
    "Linear warm-up steps."
    weight_decay: float = 0.01
    "AdamW weight decay."
    scenes: int = 4096
    "Train-split scenes the (short prompt, DSC) pairs are drawn from (datagen.sizes.train by default)."
    target_order: str = "subject"
    """Order of the DSC targets (``world.dsc_order`` values): ``subject`` puts the main subject's group
    first, so the LM restates the request before adding detail (96.5% of held-out prompts kept every
    fact, against 87.9% with ``reading``, at 2 x 128, 2,400 steps)."""
    alt_colour_rate: float = 0.5
    "Share of the alt-style training prompts that name the subject's colour (alt-text in the world never does)."
    heldout: int = 128
    "dev-split prompts of each short kind on which the export's fact preservation is measured (never val: its prompts are the evaluation's)."
    log_every: int = 100
    "Log the training loss every N steps."
    out_dir: str = "outputs/upsample"
    "Run folder; the model and tokenizer are saved to <out_dir>/export with save_pretrained."


@dataclass
class UpsampleConfig:
    enabled: bool = False
    "Rewrite prompts before generation (`dalle3-generate ... upsample=true`, `dalle3-eval ... upsample=true`)."
    name: str = "world"
    "Name of the preset (conf/upsample/<name>.yaml), shown in logs and the report."
    model: str = "outputs/upsample/export"
    "A transformers LM: hub name (Qwen/Qwen2.5-1.5B-Instruct) or local folder; default: the world LM of stage=upsample."
    kind: str = "auto"
    "auto | causal | seq2seq."
    chat: str = "auto"
    "auto: use the tokenizer's chat template when it has one | always | never (plain prompt_template)."
    prompt_template: str = "Rewrite as one detailed image description: {prompt}\nDescription:"
    "Input text for models without a chat template ({prompt} is the request)."
    system_prompt: Optional[str] = None
    "Chat system instruction; null: ours (dalle3/upsample/instruction.py)."
    few_shot: bool = True
    "Chat models: add our few-shot (request, description) turns after the system instruction."
    device: str = "auto"
    "auto (the GPU when one is visible) | cpu | cuda."
    dtype: str = "auto"
    "auto: bfloat16 on the GPU, float32 on the CPU | float32 | bfloat16 | float16."
    trust_remote_code: bool = False
    "Passed to from_pretrained (only for models that need their own code)."
    kinds: List[str] = field(default_factory=lambda: ["ssc", "alt"])
    "Prompt kinds dalle3-eval compares with and without upsampling."
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    "Decoding settings."
    guards: GuardConfig = field(default_factory=GuardConfig)
    "Clean-up and fallback rules applied to every answer."
    train: UpsampleTrainConfig = field(default_factory=UpsampleTrainConfig)
    "stage=upsample: the world LM's size and training."


def validate_upsample(cfg: Any, key: str = "upsample") -> None:
    """Check the ``upsample`` block (one-line :class:`ConfigError`)."""
    check_choice(f"{key}.kind", cfg.kind, MODEL_KINDS)
    check_choice(f"{key}.chat", cfg.chat, CHAT_MODES)
    check_choice(f"{key}.device", cfg.device, DEVICES)
    check_choice(f"{key}.dtype", cfg.dtype, DTYPES)
    if not str(cfg.model or "").strip():
        raise ConfigError(f"{key}.model is empty; allowed: a hub name (e.g. Qwen/Qwen2.5-1.5B-Instruct) or a local folder")
    if "{prompt}" not in cfg.prompt_template:
        raise ConfigError(f"{key}.prompt_template={cfg.prompt_template!r} lacks {{prompt}}; allowed: a template with {{prompt}}")
    for kind in cfg.kinds:
        check_choice(f"{key}.kinds", kind, UPSAMPLE_KINDS)
    g = cfg.generation
    check_range(f"{key}.generation.temperature", g.temperature, 0.0, 5.0)
    if not 0.0 < g.top_p <= 1.0:
        raise ConfigError(f"{key}.generation.top_p={g.top_p!r} is out of range; allowed: (0, 1]")
    check_positive(f"{key}.generation.max_new_tokens", g.max_new_tokens)
    check_positive(f"{key}.generation.batch_size", g.batch_size)
    if not g.repetition_penalty > 0:
        raise ConfigError(f"{key}.generation.repetition_penalty={g.repetition_penalty!r} must be positive")
    gd = cfg.guards
    check_positive(f"{key}.guards.max_words", gd.max_words)
    if not 0 <= gd.min_words <= gd.max_words:
        raise ConfigError(f"{key}.guards.min_words={gd.min_words} is out of range; allowed: 0..guards.max_words ({gd.max_words})")
    if gd.max_tokens is not None:
        check_positive(f"{key}.guards.max_tokens", gd.max_tokens)


def validate_upsample_train(cfg: Any, key: str = "upsample.train") -> None:
    """Check the ``upsample.train`` block of stage=upsample."""
    for name in ("layers", "width", "heads", "max_length", "steps", "batch_size", "scenes", "heldout", "log_every"):
        check_positive(f"{key}.{name}", getattr(cfg, name))
    if cfg.width % cfg.heads:
        raise ConfigError(f"{key}.heads={cfg.heads} does not divide {key}.width={cfg.width}; allowed: a divisor of it")
    if not cfg.lr > 0:
        raise ConfigError(f"{key}.lr={cfg.lr!r} must be positive")
    if cfg.warmup_steps < 0:
        raise ConfigError(f"{key}.warmup_steps={cfg.warmup_steps} must be >= 0")
    check_range(f"{key}.alt_colour_rate", cfg.alt_colour_rate, 0.0, 1.0)
    check_choice(f"{key}.target_order", cfg.target_order, DSC_ORDERS)
