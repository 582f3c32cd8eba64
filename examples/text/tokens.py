"""A simple English tokeniser and its inverse, used to build the bundled corpus and print samples.

Tokens are lower-cased words (with an optional apostrophe suffix: ``don't``, ``it's``), numbers,
runs of dashes or dots (``--``, ``...``) and single punctuation marks. ``detokenize`` puts the words
back together with conventional spacing; ``detokenize(tokenize(s))`` equals ``s`` up to case and
whitespace around punctuation.
"""
from __future__ import annotations

import re
import unicodedata
from typing import List, Sequence

__all__ = ["tokenize", "detokenize", "normalise"]

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)*|-{2,}|\.{2,}|[^\sa-z0-9]")
_NO_SPACE_BEFORE = {".", ",", "!", "?", ";", ":", ")", "]", "}", "%", "...", "'s"}
_NO_SPACE_AFTER = {"(", "[", "{", "$", "#"}


def normalise(text: str) -> str:
    """Fold accents and typographic quotes to ASCII, drop other non-ASCII and control characters,
    and collapse whitespace to single spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = (text.replace("\u2019", "'").replace("\u2018", "'")
            .replace("\u201c", '"').replace("\u201d", '"').replace("\u2014", "--"))
    text = text.encode("ascii", "ignore").decode("ascii")
    text = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text)
    return " ".join(text.split())


def tokenize(text: str) -> List[str]:
    """``"Don't panic!" -> ['"', "don't", 'panic', '!', '"']``."""
    return _TOKEN.findall(normalise(text).lower())


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens into a readable string: no space before closing punctuation or after opening
    brackets; double quotes alternate between opening and closing."""
    out: List[str] = []
    quote_open = False
    glue_next = True  # no space before the first token
    for tok in tokens:
        if tok == '"':
            if quote_open:
                out.append(tok)
                glue_next = False
            else:
                out.append(("" if glue_next else " ") + tok)
                glue_next = True
            quote_open = not quote_open
            continue
        space = "" if (glue_next or tok in _NO_SPACE_BEFORE) else " "
        out.append(space + tok)
        glue_next = tok in _NO_SPACE_AFTER
    return "".join(out)
