"""Text that reaches models and pages: markup stripped, entities decoded, whitespace folded.

Real metadata (Amazon 2018 above all) holds HTML: titles that are a bare `<span class=...`
fragment, descriptions with `<i>`/`<br>` tags, categories with `&amp;`. The standard
library's HTML parser strips it; a regex would mangle text such as "a < b".
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

# tags whose content is code, not text; tags that separate words when removed
_SKIPPED = frozenset({"script", "style", "noscript", "template"})
_BREAKS = frozenset({"br", "p", "div", "li", "ul", "ol", "tr", "td", "th", "h1", "h2", "h3",
                     "h4", "h5", "h6", "hr", "table", "section", "article", "dd", "dt"})
_UNFINISHED_TAG = re.compile(r"^</?[A-Za-z!]")
_CODE = re.compile(r"\bvar\s+\w+\s*=|\bfunction\s*\(|\b(document|window)\.\w|getElementById")
TITLE_CHARS = 100  # a title taken from a description is cut near this length


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIPPED:
            self._skip += 1
        elif tag in _BREAKS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in _BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skip = max(0, self._skip - 1)
        elif tag in _BREAKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def clean_text(value: object) -> str:
    """Plain text of a field: tags removed (script/style content too), entities decoded
    (twice-escaped ones like `&amp;amp;` as well), whitespace folded to single spaces."""
    if value is None:
        return ""
    text = str(value)
    if "<" in text or "&" in text:
        parser = _TextOnly()
        parser.feed(text)
        rest = parser.rawdata  # what the parser held back: an unfinished tag or entity
        if rest and not _UNFINISHED_TAG.match(rest):
            parser.handle_data(html.unescape(rest))
        text = "".join(parser.parts)
        for _ in range(2):  # '&amp;amp;' decodes to '&amp;' in the first pass
            if "&" not in text:
                break
            text = html.unescape(text)
    return " ".join(text.split())


def is_junk_title(title: str) -> bool:
    """A cleaned title that names nothing: empty, no letter or digit, or leaked page code."""
    return not any(c.isalnum() for c in title) or bool(_CODE.search(title))


def first_sentence(text: str, limit: int = TITLE_CHARS) -> str:
    """The first sentence of a text, cut at a word boundary near `limit` characters."""
    match = re.search(r"[.!?](\s|$)", text)
    sentence = text[: match.start() + 1] if match else text
    if len(sentence) <= limit:
        return sentence.strip()
    cut = sentence[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "…"


def choose_title(title: str, *fallbacks: str) -> tuple[str, bool]:
    """(title, whether a fallback was needed): the cleaned title, or when it is junk the first
    usable fallback (description, brand, category, ... in the caller's order) shortened to a
    title, or "" when none is usable."""
    if not is_junk_title(title):
        return title, False
    for candidate in fallbacks:
        if candidate and not is_junk_title(candidate):
            return first_sentence(candidate), True
    return "", True
