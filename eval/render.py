"""A report as a list of blocks, rendered to Markdown and to a standalone HTML page.

Blocks are tuples: ``("h1"|"h2"|"h3", text)``, ``("p", text)``, ``("list", [text, ...])``,
``("table", header, rows)``, ``("img", path relative to the report, alt text)``,
``("code", text)``. Text may use ``**bold**`` and ```code``` (rendered in both formats). The
HTML embeds the images (base64), so report.html is one file that can be mailed around.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

Block = tuple


def _md_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    """Markdown text of ``blocks``.

    >>> print(to_markdown([("h2", "A"), ("table", ["x", "y"], [[1, 2]])]))
    ## A
    <BLANKLINE>
    | x | y |
    | --- | --- |
    | 1 | 2 |
    <BLANKLINE>
    """
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
            lines.append("| " + " | ".join("---" for _ in header) + " |")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})")
        elif kind == "code":
            out.append(f"```\n{block[1]}\n```")
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    return "\n\n".join(out) + "\n"


def _inline(text: object) -> str:
    """Escape, then ``**b**`` -> <strong>, ```c``` -> <code>.

    >>> _inline("**a** < `b`")
    '<strong>a</strong> &lt; <code>b</code>'
    """
    out = html.escape(str(text), quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}"
    "img{max-width:100%}pre{background:#f4f4f4;padding:.5em}"
)


def to_html(blocks: list[Block], *, root: str | Path, title: str) -> str:
    """A standalone HTML page; images under ``root`` are embedded as base64 PNG."""
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>"
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{_inline(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
            cells = ["".join(f"<td>{_inline(c)}</td>" for c in row) for row in block[2]]
            body = "".join(f"<tr>{c}</tr>" for c in cells)
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            data = base64.b64encode((Path(root) / block[1]).read_bytes()).decode()
            alt = html.escape(block[2])
            parts.append(f"<p><img alt='{alt}' src='data:image/png;base64,{data}'></p>")
        elif kind == "code":
            parts.append(f"<pre>{html.escape(block[1])}</pre>")
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    return "\n".join(parts) + "\n</body></html>\n"
