"""A small document builder that writes the same report as Markdown and as self-contained HTML.

Blocks are added in order (headings, paragraphs, tables, figures, code); ``write(out_dir)`` emits
``report.md`` (figures linked as files) and ``report.html`` (figures embedded as base64 data URIs,
so the page opens anywhere with all its pictures). Both files are written atomically.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csmae.atomic import write_text_atomic


@dataclass
class _Block:
    kind: str
    payload: Any


@dataclass
class Report:
    title: str
    blocks: list[_Block] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(_Block("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        self.blocks.append(_Block("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(_Block("bullets", list(items)))

    def table(self, header: list[str], rows: list[list[Any]], *, caption: str = "") -> None:
        self.blocks.append(_Block("table", (header, [[str(c) for c in r] for r in rows], caption)))

    def figure(self, path: str | Path, caption: str) -> None:
        """A PNG file (already written inside the report folder) with a caption."""
        self.blocks.append(_Block("figure", (Path(path), caption)))

    def code(self, text: str) -> None:
        self.blocks.append(_Block("code", text))

    # ------------------------------------------------------------------ rendering
    def to_markdown(self, root: Path) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b.kind == "heading":
                level, text = b.payload
                out += ["#" * level + " " + text, ""]
            elif b.kind == "paragraph":
                out += [b.payload, ""]
            elif b.kind == "bullets":
                out += [f"- {item}" for item in b.payload] + [""]
            elif b.kind == "table":
                header, rows, caption = b.payload
                if caption:
                    out += [f"*{caption}*", ""]
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out += ["| " + " | ".join(r) + " |" for r in rows]
                out.append("")
            elif b.kind == "figure":
                path, caption = b.payload
                rel = os.path.relpath(path, root)
                out += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
            elif b.kind == "code":
                out += ["```", b.payload, "```", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        esc = html.escape
        parts = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{esc(self.title)}</title><style>{_CSS}</style></head><body><main>",
            f"<h1>{esc(self.title)}</h1>",
        ]
        for b in self.blocks:
            if b.kind == "heading":
                level, text = b.payload
                parts.append(f"<h{level}>{esc(text)}</h{level}>")
            elif b.kind == "paragraph":
                parts.append(f"<p>{esc(b.payload)}</p>")
            elif b.kind == "bullets":
                parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b.payload) + "</ul>")
            elif b.kind == "table":
                header, rows, caption = b.payload
                cap = f"<caption>{esc(caption)}</caption>" if caption else ""
                head = "".join(f"<th scope='col'>{esc(h)}</th>" for h in header)
                body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
                parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b.kind == "figure":
                path, caption = b.payload
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                parts.append(
                    f"<figure><img src='data:image/png;base64,{data}' alt='{esc(caption)}'>"
                    f"<figcaption>{esc(caption)}</figcaption></figure>"
                )
            elif b.kind == "code":
                parts.append(f"<pre><code>{esc(b.payload)}</code></pre>")
        parts.append("</main></body></html>")
        return "\n".join(parts)

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write report.md and report.html into ``out_dir``; returns their paths."""
        root = Path(out_dir)
        root.mkdir(parents=True, exist_ok=True)
        md, page = root / "report.md", root / "report.html"
        write_text_atomic(md, self.to_markdown(root))
        write_text_atomic(page, self.to_html())
        return md, page


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d232a;background:#f6f7f9;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.9rem;margin-top:.4em}h2{border-bottom:1px solid #dde2e8;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:1em 0;font-size:.92rem}
caption{text-align:left;color:#555;margin-bottom:.3em}
th,td{border:1px solid #d5dbe1;padding:4px 9px;text-align:right}th{background:#eef2f6}
td:first-child,th:first-child{text-align:left}
figure{margin:1.2em 0}img{max-width:100%;border:1px solid #e3e7eb}figcaption{color:#555;font-size:.9rem}
pre{background:#f1f3f5;padding:10px;overflow:auto}
"""
