"""Guards on an upsampler's answer: one clean description, or the user's own prompt.

Public upsamplers fail in known ways: chat models greet ("Sure! Here is a detailed
description:"), number alternatives ("1. ... 2. ..."), quote their answer, echo role tags,
run past the text encoder's context, or quietly drop what the user asked for. Each rule
here is a pure function of text; :func:`guard` composes them and says, for every answer it
refuses, why (the reasons of :data:`FALLBACK_REASONS`), so fallbacks can be counted.

What the request "asks for" is read two ways: every fact the world's caption parser finds
in it (:func:`dalle3.world.parse.caption_facts`: shapes, colours, sizes, counts, positions,
sign words) must still be stated by the answer (judged as :func:`dalle3.world.facts.judge`
judges a caption, with the answer's facts as the truth), and every other content word
(request words minus stop words and web noise) must appear in it, plurals aside.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from dalle3.world import lexicon
from dalle3.world.facts import judge
from dalle3.world.parse import KNOWN_WORDS, caption_facts, tokenize

FALLBACK_REASONS = ("empty", "too_short", "dropped_content")
"Why an answer is refused; the prompt itself then goes to the text encoder."

STOP_WORDS = frozenset("""
a an the and or but of in on at to for with without from by as is are was were be been being this that these those
there here it its into onto over under near next very some any each every all both which who whom whose what
image picture photo drawing illustration render rendering scene showing shows show depicting depicts please make
create draw generate me my i you your we our us corner side
""".split())
"Words that carry no content of a request (the world's glue words among them)."

_ROLE = re.compile(r"^\s*(?:<\|?[a-z_]+\|?>|\[/?inst\]|#+\s*(?:response|answer|description)|"
                   r"(?:assistant|system|user|ai|bot|gpt|model)[ \t]*(?::|\n))\s*", re.I)
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>|<(?:bos|eos|pad|unk|sep)>|\[/?INST\]", re.I)
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok|absolutely|great|alright)\b[^.!:\n]*[.!:,]\s*)?"
    r"(?:(?:here(?:'s| is| are)|below is|this is)\b[^:\n]*?(?:description|prompt|caption|version|rewrite|"
    r"image)[^:\n]*[:.]\s*|(?:description|prompt|caption|rewritten prompt|answer|output|image description)"
    r"\s*(?:\d+\s*)?:\s*)?", re.I)
_LEAD_CHATTER = re.compile(r"^\s*(?:sure|certainly|of course|okay|ok|absolutely|great|alright)\b[!.,]?\s*", re.I)
_TAIL = re.compile(r"\s*(?:\n|(?<=[.!?])\s)\s*(?:let me know|i hope|hope this|feel free|note:|this description|"
                   r"this prompt|(?:user|human|request|prompt)\s*:|description\s*2|option\s*2|alternatively|"
                   r"\(\s*\d+\s*words?\s*\)).*$", re.I | re.S)
_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022]|(?:option|description|version)\s*\d+\s*[:.)-])\s*", re.I)
_WORD = re.compile(r"[a-z]+|\d+", re.I)
_NOISE = frozenset(w.lower() for w in _WORD.findall(" ".join(
    lexicon.NOISE_FILE_PREFIXES + lexicon.NOISE_FILE_SUFFIXES + lexicon.NOISE_SHOP + lexicon.NOISE_WORDS)))
"Web-noise words of the world's alt-text (file names, shop words): never content."


@dataclass(frozen=True)
class Guarded:
    prompt: str
    "The request as the user wrote it."
    text: str
    "What the text encoder gets: the cleaned answer, or ``prompt`` on a fallback."
    raw: str
    "The model's answer as generated."
    fallback: Optional[str] = None
    "Why the answer was refused (one of :data:`FALLBACK_REASONS`); None when ``text`` is the answer."
    detail: str = ""
    "What was missing or wrong (for the log)."
    capped: bool = False
    "The answer was cut to the word or token limit."


def strip_chatter(text: str) -> str:
    """Drop special tokens, role tags, greetings and preambles ("Sure! Here is...:", "Description:"),
    trailing remarks ("Let me know..."), markdown emphasis and the quotes around the whole answer."""
    text = _SPECIAL.sub(" ", text or "").replace("**", "").replace("__", "")
    prev = None
    while prev != text:  # role tag, then greeting, then "Here is ...:", in any nesting
        prev = text
        text = _ROLE.sub("", text)
        text = _PREAMBLE.sub("", text, count=1)
        text = _LEAD_CHATTER.sub("", text) if _LEAD_CHATTER.match(text) and ":" not in text[:60] else text
    text = _TAIL.sub("", text.strip())
    return strip_quotes(text.strip())


def strip_quotes(text: str) -> str:
    """Quotes around the whole answer go; quotes inside it (a sign's text) stay."""
    pairs = {'"': '"', "'": "'", "\u201c": "\u201d", "`": "`"}
    while len(text) >= 2 and text[0] in pairs and text[-1] == pairs[text[0]] and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    return text


def first_description(text: str) -> str:
    """Only the first description: the first paragraph, the first item of a list of alternatives."""
    text = (text or "").strip()
    lines = [ln for ln in text.splitlines()]
    items = [i for i, ln in enumerate(lines) if _ITEM.match(ln)]
    if len(items) >= 2 or (items and items[0] == 0):
        start = items[0]
        end = items[1] if len(items) > 1 else len(lines)
        text = _ITEM.sub("", "\n".join(lines[start:end]), count=1)
    text = re.split(r"\n\s*\n", text.strip())[0]
    return re.sub(r"\s+", " ", text).strip()


def tidy_spacing(text: str) -> str:
    """Undo a word-level tokenizer's spacing: ``circle , and`` -> ``circle, and``; ``" cat "`` -> ``"cat"``."""
    text = re.sub(r'"\s*([^"]*?)\s*"', r'"\1"', text)
    text = re.sub(r"\s+([.,;:!?)])", r"\1", text)
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text.strip())
    return text


def cap_length(text: str, max_words: int, count_tokens: Optional[Callable[[str], int]] = None,
               max_tokens: Optional[int] = None) -> tuple[str, bool]:
    """``(text, was_cut)``: at most ``max_words`` words and ``max_tokens`` encoder tokens.

    Whole sentences are kept while they fit; when even the first does not, it is cut word
    by word. ``count_tokens`` counts in the LDM text encoder's own tokenizer (with its start
    and end tokens), since that, not words, is what it truncates.
    """
    def fits(t: str) -> bool:
        return len(t.split()) <= max_words and (count_tokens is None or max_tokens is None
                                                  or count_tokens(t) <= max_tokens)
    if fits(text):
        return text, False
    sentences = re.split(r"(?<=[.!?])\s+", text)
    kept = ""
    for s in sentences:
        trial = f"{kept} {s}".strip()
        if not fits(trial):
            break
        kept = trial
    if not kept:
        words = sentences[0].split()
        lo, hi = 0, len(words)
        while lo < hi:  # the longest prefix that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(" ".join(words[:mid])) else (lo, mid - 1)
        kept = " ".join(words[:lo]).rstrip(",;:")
    return kept, True


def _norm(word: str) -> str:
    """Lower case, plural ending dropped ("circles" -> "circle", "boxes" -> "box"); both sides alike."""
    w = word.lower()
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-2] if w.endswith(("shes", "ches", "xes", "zes")) else w[:-1]
    return w


def _unit(word: str) -> Optional[str]:
    """The form a content word is compared in, or None for words that are not content.

    Colour, shape and size words compare by the parser's meaning ("disc" = "circle",
    "little" = "small"); number and position words are left to the fact check, which also
    accepts "two circles" answered by "one red circle and one blue circle".
    """
    w = word.lower()
    if w in STOP_WORDS or w in _NOISE or (w.isdigit() and len(w) >= 3) or (not w.isalpha() and not w.isdigit()):
        return None
    if w in KNOWN_WORDS:
        kind, value = tokenize(w)[0]
        return str(value) if kind in ("colour", "shape", "size") else None
    return _norm(w)


def content_words(request: str) -> list[str]:
    """Words of ``request`` that must survive (:func:`_unit` forms, in order): not stop words, not web
    noise or file numbers, not number or position words (those are checked as facts)."""
    out: list[str] = []
    for w in _WORD.findall(request or ""):
        u = _unit(w)
        if u is not None and u not in out:
            out.append(u)
    return out


def missing_content(request: str, answer: str) -> list[str]:
    """What ``answer`` fails to keep of ``request``: content words, then stated facts (``colour red circle``)."""
    have = {_unit(w) for w in _WORD.findall(answer or "")}
    missing = [w for w in content_words(request) if w not in have]
    stated, truth = caption_facts(request), caption_facts(answer)
    for cat, facts in stated.items():
        for fact in sorted(facts, key=str):
            if not judge(cat, fact, truth[cat])[0]:
                missing.append(f"{cat} " + " ".join("-" if v is None else str(v) for v in fact))
    return missing


def guard(prompt: str, raw: str, *, min_words: int = 6, max_words: int = 80,
          count_tokens: Optional[Callable[[str], int]] = None, max_tokens: Optional[int] = None,
          check_content: bool = True) -> Guarded:
    """Clean ``raw`` (the model's answer to ``prompt``) or refuse it.

    Args:
        min_words: fewer words is ``too_short``.
        max_words, count_tokens, max_tokens: the length cap (:func:`cap_length`); it is applied
            before the content check, so a cut that loses a requested word is refused too.
        check_content: refuse answers that drop content (:func:`missing_content`).
    """
    text = tidy_spacing(first_description(strip_chatter(raw)))
    if not _WORD.search(text):
        return Guarded(prompt, prompt, raw, "empty", "no words left after clean-up")
    text, capped = cap_length(text, max_words, count_tokens, max_tokens)
    n = len(text.split())
    if n < min_words:
        return Guarded(prompt, prompt, raw, "too_short", f"{n} words < {min_words}", capped)
    if check_content:
        missing = missing_content(prompt, text)
        if missing:
            return Guarded(prompt, prompt, raw, "dropped_content", "; ".join(missing), capped)
    return Guarded(prompt, text, raw, None, "", capped)
