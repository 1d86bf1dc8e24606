"""GX Data Docs for a release, made self-contained.

GX's templates load bootstrap, jQuery, vega and font-awesome from CDNs, and the navbar logo is
an S3 URL carrying the data context id, so opening the page online phones home (ecosystem.md
section 3). GX ships none of those libraries (its package has only its own CSS, fonts and
images), so they cannot be inlined: they are removed, the logo points at the copy GX writes
into the site's static/images, and a small inline stylesheet keeps the pages readable
(bootstrap's hidden `collapse` sections then simply show, which suits a review page).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from jinja2.bccache import Bucket, BytecodeCache

from deidflow.errors import GateFailed

EXTERNAL = r"(?:https?:)?//"
_SCRIPT = re.compile(
    rf"<script\b[^>]*\bsrc\s*=\s*[\"']{EXTERNAL}[^\"']*[\"'][^>]*>\s*</script>", re.I | re.S)
_LINK = re.compile(rf"<link\b[^>]*\bhref\s*=\s*[\"']{EXTERNAL}[^\"']*[\"'][^>]*>", re.I | re.S)
_IMG = re.compile(rf"(<img\b[^>]*\bsrc\s*=\s*)([\"']){EXTERNAL}[^\"']*\2", re.I | re.S)
# Links to outside pages fetch nothing until clicked, but GX's carry tracking parameters
# (utm_*): they become plain text.
_ANCHOR = re.compile(rf"(<a\b[^>]*?)\s+href\s*=\s*([\"']){EXTERNAL}[^\"']*\2", re.I | re.S)
_CSS_URL = re.compile(rf"url\(\s*[\"']?{EXTERNAL}[^)\"']*[\"']?\s*\)", re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)

READABLE_CSS = """<style id="deidflow-offline">
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC",sans-serif;margin:0 1.5rem;color:#222}
nav,.navbar{display:flex;align-items:center;gap:1rem;border-bottom:1px solid #ddd;padding:.5rem 0}
table{border-collapse:collapse;margin:.5rem 0;width:100%}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
.table-success,.text-success{color:#17692b}.table-danger,.text-danger{color:#a11}
.card{border:1px solid #ddd;border-radius:4px;margin:.75rem 0;padding:.5rem}
code,pre{background:#f5f5f5;padding:0 .2rem}
.badge{padding:0 .3rem;border:1px solid #ccc;border-radius:3px}
</style>"""


def build_data_docs(ctx: Any, site_name: str, docs_dir: Path) -> Path:
    """Build the site for this run's stored results and make it self-contained."""
    with _compiled_templates_kept():
        ctx.build_data_docs(site_names=[site_name])
    make_self_contained(docs_dir)
    return docs_dir / "index.html"


class _TemplateBytecode(BytecodeCache):
    """Compiled jinja templates kept in memory for the process. GX makes a new jinja
    Environment for every page and block it renders, so without it each build compiles the
    same few templates about fifty times over. Jinja keys an entry by template name and
    source checksum, so a changed template is compiled afresh."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            self._code[bucket.key] = bucket.bytecode_to_string()


_BYTECODE = _TemplateBytecode()


@contextmanager
def _compiled_templates_kept() -> Iterator[None]:
    """GX's page views use the shared bytecode cache for the duration of a build (restored
    afterwards, as `gate._quiet_gx` restores what it changes)."""
    from great_expectations.render.view.view import DefaultJinjaView

    original = DefaultJinjaView.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.env.bytecode_cache = _BYTECODE

    DefaultJinjaView.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        DefaultJinjaView.__init__ = original  # type: ignore[method-assign]


def make_self_contained(site: Path) -> None:
    logo = site / "static" / "images" / "logo-long.png"
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        text = _SCRIPT.sub("", text)
        text = _LINK.sub("", text)
        local = os.path.relpath(logo, page.parent).replace(os.sep, "/")
        text = _IMG.sub(lambda m: f"{m.group(1)}{m.group(2)}{local}{m.group(2)}", text)
        text = _CSS_URL.sub("none", text)
        text = _ANCHOR.sub(r"\1", text)
        if 'id="deidflow-offline"' not in text:
            text = text.replace("</head>", READABLE_CSS + "\n</head>", 1)
        page.write_text(text, encoding="utf-8")
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8")
        css.write_text(_CSS_URL.sub("none", text), encoding="utf-8")
    for svg in site.rglob("*.svg"):  # GX's logos carry an editor's URL in a comment
        text = svg.read_text(encoding="utf-8")
        svg.write_text(_COMMENT.sub("", text), encoding="utf-8")
    leftovers = external_references(site)
    if leftovers:  # a GX template change we do not handle: refuse rather than phone home
        raise GateFailed(
            f"the Data Docs still reference outside servers ({len(leftovers)}: "
            f"{'; '.join(leftovers[:3])}), so the validation report cannot be published",
            file=str(site),
            fix="a Great Expectations upgrade changed its page templates: extend "
            "deidflow.validation.data_docs.make_self_contained, or pin the previous GX",
        )


class _Refs(HTMLParser):
    TAGS = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src",
            "embed": "src", "video": "src", "audio": "src", "object": "data"}

    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        want = self.TAGS.get(tag)
        for name, value in attrs:
            if value and (name == want or name == "srcset") and re.match(EXTERNAL, value.strip(), re.I):
                self.external.append(f"<{tag} {name}={value}>")
            if name == "style" and value and _CSS_URL.search(value):
                self.external.append(f"<{tag} style=url(...)>")


def external_references(site: Path) -> list[str]:
    """Every reference that would make a browser fetch from another server when a page of the
    site is opened: script/link/img/... sources in HTML, url(...) in CSS and inline styles."""
    found: list[str] = []
    for page in site.rglob("*.html"):
        parser = _Refs()
        text = page.read_text(encoding="utf-8")
        parser.feed(text)
        found += [f"{page.name}: {r}" for r in parser.external]
        found += [f"{page.name}: {m.group(0)}" for m in _CSS_URL.finditer(text)]
    for css in site.rglob("*.css"):
        found += [f"{css.name}: {m.group(0)}" for m in _CSS_URL.finditer(css.read_text("utf-8"))]
    return found
