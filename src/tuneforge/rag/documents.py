"""Documents to index: plain text, Markdown, HTML and PDF, each read into text plus its headings' positions."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from tuneforge.errors import DataError

TEXT_SUFFIXES = {".txt", ".text", ".rst"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
SUFFIXES = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES


@dataclass
class Document:
    path: str
    text: str
    headings: list[tuple[int, str]] = field(default_factory=list)  # (char offset, title), ascending

    def heading_at(self, char: int) -> str:
        """The nearest heading at or before `char` ("" when none)."""
        title = ""
        for start, name in self.headings:
            if start > char:
                break
            title = name
        return title


def collect_files(inputs: list[str | Path]) -> list[Path]:
    """The supported files among `inputs` (files, or folders searched recursively), sorted, without repeats."""
    found: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise DataError(f"{path}: unsupported document type {path.suffix or '(none)'!r}",
                                hint=f"supported: {', '.join(sorted(SUFFIXES))}")
            found.add(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return sorted(p.resolve() for p in found)


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
# reST / pydoc style: a title line underlined by one repeated punctuation character of at least its length.
_UNDERLINED = re.compile(r"^([^\n]*\S[^\n]*)\n([=\-~*^#+])\2+[ \t]*$", re.M)


def _underlined_headings(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group(1).strip()) for m in _UNDERLINED.finditer(text)
            if len(m.group(0).split("\n")[1].rstrip()) >= len(m.group(1).rstrip())]


class _HTMLText(HTMLParser):
    """Visible text of an HTML page with the positions of h1-h6; script/style dropped, blocks end lines."""

    BLOCKS = {"p", "div", "br", "li", "tr", "section", "article", "pre", "table", "ul", "ol", "blockquote"}
    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.size = 0
        self.headings: list[tuple[int, str]] = []
        self._skip = 0
        self._heading: list[str] | None = None
        self._heading_start = 0

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.HEADINGS:
            self._emit("\n\n")
            self._heading, self._heading_start = [], self.size
        elif tag in self.BLOCKS:
            self._emit("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.HEADINGS and self._heading is not None:
            title = " ".join("".join(self._heading).split())
            if title:
                self.headings.append((self._heading_start, title))
            self._heading = None
            self._emit("\n\n")
        elif tag in self.BLOCKS:
            self._emit("\n")

    def handle_data(self, data):
        if self._skip:
            return
        if self._heading is not None:
            self._heading.append(data)
        self._emit(data)


def read_document(path: Path) -> Document:
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return _read_pdf(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start})") from None
    if suffix in HTML_SUFFIXES:
        parser = _HTMLText()
        parser.feed(raw)
        parser.close()
        return Document(str(path), "".join(parser.parts), parser.headings)
    if suffix in MARKDOWN_SUFFIXES:
        headings = [(m.start(), m.group(2).strip()) for m in _MD_HEADING.finditer(raw)]
        return Document(str(path), raw, sorted(headings + _underlined_headings(raw)))
    return Document(str(path), raw, _underlined_headings(raw))


def _read_pdf(path: Path) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, OSError, ValueError) as error:
        raise DataError(f"{path}: unreadable PDF ({error})") from None
    text, headings = "", []
    for number, page in enumerate(pages, 1):
        headings.append((len(text), f"page {number}"))
        text += page + "\n\n"
    return Document(str(path), text, headings)
