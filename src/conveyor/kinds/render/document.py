"""Render a checked `RenderTask` to PDF bytes: Jinja2 builds the HTML, WeasyPrint lays it out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

from conveyor.kinds.render.payload import RenderTask
from conveyor.kinds.render.resources import get_resource

TEMPLATES = Path(__file__).parent / "templates"
PAGE_SIZES = {"a4": "A4", "letter": "letter"}


@dataclass(frozen=True)
class Document:
    """A rendered PDF. `filename` is the human one, `file` the name it is stored under."""

    filename: str
    file: str
    pdf: bytes
    pages: int


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def safe_file_name(filename: str) -> str:
    """`Binary Cards (with numbers - a4).pdf` → `Binary_Cards_with_numbers_-_a4.pdf`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", filename.removesuffix(".pdf")).strip("._-")
    return f"{stem[:190] or 'document'}.pdf"


def build_html(task: RenderTask) -> tuple[str, str]:
    """The page HTML and the human file name; `RenderInputError` for bad views or options."""
    resource = get_resource(task.resource_view)
    options = resource.resolve(task.options)
    pages = resource.pages(options, task.paper_size) * task.copies
    filename = f"{task.resource_name} ({resource.subtitle(options, task.paper_size)}).pdf"
    html = (
        environment()
        .get_template("base.html")
        .render(
            title=task.resource_name,
            header_text=task.header_text,
            url=task.url,
            page_size=PAGE_SIZES[task.paper_size],
            pages=pages,
        )
    )
    return html, filename


def render_document(task: RenderTask) -> Document:
    """Render the task to PDF (A4 595x842 pt or letter 612x792 pt pages)."""
    import weasyprint  # type: ignore[import-untyped]  # heavy (pango via cffi): imported only where documents are made

    html, filename = build_html(task)
    laid_out = weasyprint.HTML(string=html, base_url=str(TEMPLATES)).render()
    pdf = laid_out.write_pdf()
    assert pdf is not None  # write_pdf returns bytes when no target is given
    return Document(filename, safe_file_name(filename), pdf, len(laid_out.pages))
