"""A report as Markdown and HTML from the same sections (text, tables, images)."""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fewbit._io import atomic_write_text
from fewbit.report.tables import html_table, markdown_table


@dataclasses.dataclass(frozen=True)
class Section:
    """A heading followed by paragraphs, optional table and optional images (paths relative to the report)."""

    title: str
    paragraphs: Sequence[str] = ()
    headers: Sequence[str] = ()
    rows: Sequence[Sequence[Any]] = ()
    images: Sequence[str] = ()


CSS = (
    "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
)


def write_report(out_dir: str | Path, title: str, sections: Sequence[Section]) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` into `out_dir`; returns both paths."""
    out_dir = Path(out_dir)
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        md += [f"## {s.title}", ""]
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        for p in s.paragraphs:
            md += [p, ""]
            body.append(f"<p>{html.escape(p)}</p>")
        if s.headers:
            md += [markdown_table(s.headers, s.rows), ""]
            body.append(html_table(s.headers, s.rows))
        for img in s.images:
            md += [f"![{s.title}]({img})", ""]
            body.append(f'<img src="{html.escape(img)}" alt="{html.escape(s.title)}">')
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md_path, "\n".join(md))
    atomic_write_text(html_path, page)
    return md_path, html_path
