"""Read facts back out of a caption: ours, or one a captioner or a user wrote.

The parser is a single left-to-right pass. Adjectives and number words wait as
*pending* until a noun takes them; a position phrase attaches to the latest mention
(so "a sign at the top" never puts an object at the top); "one" with no noun after it
is a pronoun for the last shape noun ("two red circles, a large one in the top left").
It is tolerant on purpose: case, plurals, synonyms, digits, missing quotes.

Fact tuples are those of :mod:`dalle3.world.facts`; a colour the caption did not state
is ``None`` (a colourless "two circles" is judged against all circles).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from dalle3.world.lexicon import COLOURS, NUMBER_WORDS, SHAPES

CATEGORIES = ("shape", "colour", "size", "count", "position", "sign")
"""Fact categories, in reporting order."""

_SHAPE_SYNONYMS = {"disc": "circle", "disk": "circle", "dot": "circle", "ring": "circle",
                   "box": "square", "rectangle": "square"}
_WORDS: dict[str, tuple[str, object]] = {}
for _shape in SHAPES:
    _WORDS[_shape] = _WORDS[_shape + "s"] = ("shape", _shape)
for _syn, _shape in _SHAPE_SYNONYMS.items():
    _WORDS[_syn] = _WORDS[_syn + "s"] = _WORDS[_syn + "es"] = ("shape", _shape)
for _colour in COLOURS:
    _WORDS[_colour] = ("colour", _colour)
_WORDS["violet"] = ("colour", "purple")
for _word, _size in (("small", "small"), ("little", "small"), ("tiny", "small"),
                     ("large", "large"), ("big", "large"), ("huge", "large")):
    _WORDS[_word] = ("size", _size)
for _n, _word in NUMBER_WORDS.items():
    _WORDS[_word] = _WORDS[str(_n)] = ("number", _n)
_WORDS["single"] = ("number", 1)
_WORDS["one"] = ("one", 1)  # a count before a noun, a pronoun without one
for _word, _pos in (("top", "top"), ("upper", "top"), ("bottom", "bottom"), ("lower", "bottom"),
                    ("left", "left"), ("right", "right"), ("center", "center"),
                    ("centre", "center"), ("middle", "center"), ("central", "center")):
    _WORDS[_word] = ("posword", _pos)
for _word in ("sign", "signs", "board", "signboard", "placard", "banner"):
    _WORDS[_word] = ("noun", "sign")
for _word in ("background", "backdrop", "backgrounds"):
    _WORDS[_word] = ("noun", "background")
for _word in ("object", "objects", "shape", "shapes", "thing", "things", "item", "items"):
    _WORDS[_word] = ("noun", "generic")
for _word in ("says", "say", "saying", "reads", "read", "reading", "labeled", "labelled",
              "word", "text", "written", "spelling", "spells"):
    _WORDS[_word] = ("signverb", None)
for _word in (".", "!", "?", ";"):
    _WORDS[_word] = ("stop", None)
for _word in (",", ":", "(", ")"):
    _WORDS[_word] = ("soft", None)
for _word in ("and", "with", "plus"):
    _WORDS[_word] = ("join", None)

_SIGN_FILLERS = {"the", "a", "an", "word", "words", "text", "is", "as", "of", "that", "on", "in", "at",
                 "it", "to", "by", "upon", "across", "along", "out", "clearly", "simply", "just"}
"""Words between "says"/"written" and the sign's word that are not the word itself."""
_QUOTE = re.compile(r"[\"\u201c\u201d]([^\"\u201c\u201d]*)[\"\u201c\u201d]")
_TOKEN = re.compile(r"__q_[a-z]*|[a-z]+|\d+|[.,;:!?()]")
_CORNER = {("top", "left"): "top left", ("top", "right"): "top right",
           ("bottom", "left"): "bottom left", ("bottom", "right"): "bottom right"}

KNOWN_WORDS = frozenset(w for w in _WORDS if w.isalnum())
"""Every word the parser gives meaning to (tests check alt-text noise avoids them)."""


def tokenize(text: str) -> list[tuple[str, object]]:
    """Typed tokens; quoted strings become ("quote", WORD) and position words merge."""
    text = _QUOTE.sub(lambda m: " __q_" + re.sub(r"[^a-z]", "", m.group(1).lower()) + " ",
                      text.lower().replace("-", " "))
    typed = []
    for tok in _TOKEN.findall(text):
        if tok.startswith("__q_"):
            typed.append(("quote", tok[4:].upper()))
        else:
            typed.append(_WORDS.get(tok, ("other", tok)))
    return _merge_positions(typed)


def _merge_positions(tokens: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """"top left" -> top left; "top center"/"center left" -> top / left; "center" alone stays."""
    out: list[tuple[str, object]] = []
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        if kind != "posword":
            out.append(tokens[i])
            i += 1
            continue
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) and tokens[i + 1][0] == "posword" else None
        if nxt is None:
            out.append(("pos", value))
            i += 1
            continue
        pair = (value, nxt)
        if pair in _CORNER or pair[::-1] in _CORNER:
            out.append(("pos", _CORNER.get(pair) or _CORNER[pair[::-1]]))
        elif "center" in pair and pair != ("center", "center"):
            out.append(("pos", nxt if value == "center" else value))
        else:  # "left right", "top bottom": contradictory; keep the first word only.
            out.append(("pos", value))
        i += 2
    return out


@dataclass
class _Mention:
    kind: str
    shape: Optional[str] = None
    colour: Optional[str] = None
    size: Optional[str] = None
    count: Optional[int] = None
    pronoun: bool = False
    positions: list = field(default_factory=list)


class _Parser:
    def __init__(self) -> None:
        self.facts: dict[str, set] = {c: set() for c in CATEGORIES}
        self.mentions: list[_Mention] = []
        self.last: Optional[_Mention] = None
        self.head: Optional[_Mention] = None
        self.pending: dict = {}
        self.expect_sign_word = False

    def _new(self, mention: _Mention, is_head: bool) -> None:
        self.mentions.append(mention)
        self.last = mention
        if is_head:
            self.head = mention if mention.kind == "object" else None
        self.pending = {}

    def _resolve_pending(self, bind: bool) -> None:
        """Pending words with no noun: "one" becomes a pronoun; with ``bind``, adjectives
        join the last mention ("a red circle, large, ...")."""
        p = self.pending
        if p.get("one"):
            head = self.head
            if head is None:
                self._new(_Mention("generic"), is_head=False)
                return
            self._new(_Mention("object", head.shape, p.get("colour") or head.colour,
                               p.get("size") or head.size, pronoun=True), is_head=False)
            return
        # Not across "and" or at the end: "a circle and a small" (a truncated generated
        # caption) must not make the circle small.
        if bind and self.last is not None and self.last.kind == "object" and "count" not in p:
            self.last.colour = self.last.colour or p.get("colour")
            self.last.size = self.last.size or p.get("size")
        self.pending = {}

    def feed(self, kind: str, value: object) -> None:
        if self.expect_sign_word and kind in ("quote", "other") and value not in _SIGN_FILLERS:
            self.expect_sign_word = False
            if str(value).isalpha():
                self.facts["sign"].add((str(value).upper(),))
                return
        if kind == "quote":
            if value:
                self.facts["sign"].add((value,))
        elif kind in ("colour", "size"):
            self.pending[kind] = value
        elif kind in ("number", "one"):
            self.pending = {k: v for k, v in self.pending.items() if k not in ("count", "one")}
            self.pending["count"] = value
            self.pending["one"] = kind == "one"
        elif kind == "shape":
            p = self.pending
            self._new(_Mention("object", value, p.get("colour"), p.get("size"), p.get("count")),
                      is_head=True)
        elif kind == "noun":
            self._new(_Mention(str(value)), is_head=True)
        elif kind == "pos":
            self._resolve_pending(bind=True)
            if self.last is not None:
                self.last.positions.append(value)
        elif kind == "signverb":
            self.expect_sign_word = True
        elif kind in ("soft", "join", "stop"):
            self._resolve_pending(bind=kind == "soft")
            self.expect_sign_word = False
            if kind == "stop":
                self.last = self.head = None

    def parse(self, tokens: list[tuple[str, object]]) -> dict[str, set]:
        for kind, value in tokens:
            self.feed(kind, value)
        self._resolve_pending(bind=False)
        for m in self.mentions:
            self._emit(m)
        return self.facts

    def _emit(self, m: _Mention) -> None:
        if m.kind != "object" or m.shape is None:
            return
        f = self.facts
        f["shape"].add((m.shape,))
        if m.colour:
            f["colour"].add((m.colour, m.shape))
        if m.size:
            f["size"].add((m.size, m.colour, m.shape))
        for pos in m.positions:
            f["position"].add((m.colour, m.shape, pos))
        if m.count is not None and not m.pronoun:
            f["count"].add((m.count, m.colour, m.shape))


def caption_facts(text: str) -> dict[str, set]:
    """Facts a caption states, per category (see :mod:`dalle3.world.facts` for the tuples).

    Sign words are read from quotes anywhere, or from the word after "says"/"reads"/
    "word"... (generated captions may lose their quotes).
    """
    return _Parser().parse(tokenize(text or ""))

