"""Data Docs are built for each run and are self-contained: opening them asks no outside
server for anything (GX's templates load bootstrap, jQuery and vega from CDNs and a logo from
S3, and that logo URL carries the data context id)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deidflow.errors import GateFailed
from deidflow.validation.data_docs import external_references, make_self_contained

from .test_gate import run

CHROMIUM = "/usr/bin/chromium"
# Chromium's own start-up traffic (time sync, component and sign-in probes), not the page's.
BROWSER_OWN_HOSTS = {"clients2.google.com", "redirector.gvt1.com", "accounts.google.com",
                     "www.google.com", "update.googleapis.com", "optimizationguide-pa.googleapis.com"}
URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.\-]+\.[A-Za-z]{2,}[^\s\"'<>)]*")
XML_NAMESPACES = ("http://www.w3.org/",)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    report = run(out, "run", docs=True)
    assert report.data_docs_index == out / "run" / "data_docs" / "index.html"
    return out / "run" / "data_docs"


def test_built_for_the_run(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert "index.html" in pages
    assert any(p.startswith("expectations/deidflow/patients") for p in pages)
    assert sum(p.startswith("validations/") for p in pages) == 2  # one per released table


def test_no_file_of_the_site_references_an_outside_server(site):
    assert external_references(site) == []
    for p in site.rglob("*"):
        if p.is_file() and p.suffix in (".html", ".css", ".js", ".svg", ".json"):
            urls = [u for u in URL.findall(p.read_text(encoding="utf-8"))
                    if not u.startswith(XML_NAMESPACES)]
            assert urls == [], f"{p.relative_to(site)} references {urls[:3]}"


def test_logo_points_at_the_local_copy(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", index)
    assert srcs and all(not s.startswith(("http", "//")) for s in srcs)
    assert all((site / s).is_file() for s in srcs)
    assert 'id="deidflow-offline"' in index  # readable without the CDN stylesheets


def test_make_self_contained_strips_each_kind_of_reference(tmp_path):
    (tmp_path / "static" / "images").mkdir(parents=True)
    (tmp_path / "static" / "images" / "logo-long.png").write_bytes(b"png")
    page = tmp_path / "sub" / "p.html"
    page.parent.mkdir()
    page.write_text(
        '<html><head><script src="https://cdn.jsdelivr.net/npm/vega@5"></script>'
        '<link rel="stylesheet" href="//stackpath.bootstrapcdn.com/bootstrap.min.css">'
        '<style>body{background:url("https://x.example/bg.png")}</style></head><body>'
        '<img src="https://great-expectations-web-assets.s3.amazonaws.com/logo.png?d=ctx-id">'
        '<a href="https://greatexpectations.io/?utm_source=docs">GX</a>'
        '<div style="background: url(https://x.example/a.png)">x</div></body></html>',
        encoding="utf-8")
    css = tmp_path / "static" / "s.css"
    css.write_text("@font-face{src:url(https://fonts.example/f.woff)}", encoding="utf-8")
    assert len(external_references(tmp_path)) >= 5
    make_self_contained(tmp_path)
    assert external_references(tmp_path) == []
    text = page.read_text(encoding="utf-8")
    assert "http" not in text and "ctx-id" not in text
    assert 'src="../static/images/logo-long.png"' in text
    assert ">GX</a>" in text  # the link text stays, as plain text
    assert "http" not in css.read_text(encoding="utf-8")


def test_a_reference_it_cannot_remove_stops_the_release(tmp_path):
    (tmp_path / "p.html").write_text(
        '<html><head></head><body><iframe src="https://tracker.example/"></iframe></body></html>',
        encoding="utf-8")
    with pytest.raises(GateFailed) as err:
        make_self_contained(tmp_path)
    assert "tracker.example" in err.value.message and err.value.fix


# --- opened in a real browser with every outside request sent to a recording proxy -----------


from browser_proxy import RecordingProxy  # noqa: E402  (tests/browser_proxy.py)


def open_in_chromium(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    proxy = RecordingProxy()
    try:
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
             f"--user-data-dir={tmp_path / 'chromium'}",
             f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
             "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=90, check=False)
    finally:
        proxy.close()
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, [h for h in proxy.hosts if h not in BROWSER_OWN_HOSTS]


@pytest.mark.browser
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="headless chromium not installed")
def test_opened_in_a_browser_it_renders_and_fetches_nothing(site, tmp_path):
    # the detector works: a page with one CDN script is caught
    control = tmp_path / "control.html"
    control.write_text('<html><head><script src="https://cdn.jsdelivr.net/npm/jquery"></script>'
                       "</head><body>x</body></html>", encoding="utf-8")
    _, hosts = open_in_chromium(control, tmp_path / "a")
    assert "cdn.jsdelivr.net" in hosts
    dom, hosts = open_in_chromium(site / "index.html", tmp_path / "b")
    assert hosts == []
    assert "deidflow.patients" in dom and "deidflow.notes" in dom


def test_templates_compile_once_per_process_and_gx_is_left_as_it_was(site, tmp_path):
    """GX compiles its page templates anew for every block it renders; the build keeps the
    bytecode (jinja checks each template's source checksum) and restores GX's view class."""
    from great_expectations.render.view.view import DefaultJinjaView

    from deidflow.validation import data_docs

    init = DefaultJinjaView.__init__
    assert data_docs._BYTECODE._code  # the first build (the fixture) filled it
    compiled = dict(data_docs._BYTECODE._code)
    again = run(tmp_path, "again", docs=True).data_docs_index.parent
    assert DefaultJinjaView.__init__ is init
    assert data_docs._BYTECODE._code == compiled  # nothing compiled a second time
    def pages(root: Path) -> list[str]:  # the run time in a page's path aside
        return sorted(re.sub(r"\d{8}T\d{6}\.\d+Z", "<run>", p.relative_to(root).as_posix())
                      for p in root.rglob("*.html"))

    assert pages(again) == pages(site)
    assert external_references(again) == []
