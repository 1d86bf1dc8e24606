"""review.html: self-contained, every section a privacy officer needs, plots as inline SVG,
escaped record values; rendered for real in headless Chromium (DOM text and a screenshot)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.manifest.review import _SECTIONS, _SIZE_LABELS, render_review, size_histogram
from deidflow.manifest.signing import signing_key_id
from deidflow.manifest.verify import verify_release
from release_sample import class_sizes, make_record

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Requests Chromium makes on its own (time sync, sign-in, dictionaries, safe browsing), not
# the page's: Google's own domains. The page's canary host below is never one of them.
BROWSER_OWN_DOMAINS = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com", "googleusercontent.com")


def _browser_own(host: str) -> bool:
    return any(host == d or host.endswith("." + d) for d in BROWSER_OWN_DOMAINS)
PLOTS = ("Records by size of their class", "Re-identification risk θ (after)", "Suppression:")


class _Page(HTMLParser):
    """Tags, attributes, section ids and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.sections: list[str] = []
        self.svg_labels: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            self.attrs.append((tag, k, v or ""))
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "svg":
            self.svg_labels.append(a.get("aria-label", ""))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def fetching_attributes(page: _Page) -> list[tuple[str, str, str]]:
    """Attributes that would make a browser fetch something outside the page."""
    bad = []
    for tag, k, v in page.attrs:
        if k in ("src", "href", "srcset", "action", "data", "poster", "formaction", "background") or (
            k.endswith(":href")
        ):
            if not (v.startswith("#") or v.startswith("data:")):
                bad.append((tag, k, v))
    return bad


@pytest.fixture
def page(release: Path) -> str:
    return (release / "review.html").read_text("utf-8")


def test_every_section_is_present_in_order(page: str):
    p = parse(page)
    assert p.sections == [sid for sid, _ in _SECTIONS]
    text = " ".join(p.text)
    for _, title in _SECTIONS:
        assert title in text


def test_the_facts_a_privacy_officer_needs(page: str, release: Path, signing_key: Path):
    r = make_record()
    text = " ".join(parse(page).text)
    for fact in (r.agreement_id, r.pipia_id, r.recipient.name, r.purpose, r.release_model,
                 r.plan.approver, r.policy_sha256, r.consent.consent_ids_digest, r.label):
        assert fact in text, fact
    for reason in r.consent.excluded_by_reason:  # exclusions by reason, with their counts
        assert reason in text
    assert "171" in text and "64" in text
    for c in r.columns:  # per-column treatment
        assert c.column in text and c.technique in text
    assert "All expectations passed." in text and "expect_min_class_size" in text
    assert signing_key_id(signing_key) in text  # the key it is signed with
    assert "deidflow verify" in text
    # the released data files are listed with their digests; the page's own files are not
    assert "data/patients.csv" in text and "validation.json" in text


def test_plots_are_inline_svg(page: str):
    labels = parse(page).svg_labels
    for plot in PLOTS:
        assert any(label.startswith(plot) for label in labels), (plot, labels)
    assert "Exclusions by reason" in labels and "Subject-table records" in labels


def test_page_fetches_nothing_and_runs_nothing(page: str):
    p = parse(page)
    assert fetching_attributes(p) == []
    assert not {"script", "link", "iframe", "object", "embed", "base", "img"} & set(p.tags)
    assert not re.search(r"url\s*\(|@import", page, re.I)
    csp = [v for t, k, v in p.attrs if t == "meta" and k == "content" and "default-src" in v]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]


def test_record_values_are_escaped(tmp_path: Path, signing_key: Path):
    """A hostile value (recipient name, column name) shows as text; it cannot add markup."""
    hostile = '<script>alert(1)</script><img src="http://evil.example/x.png">'
    record = make_record(
        recipient={"id": "ACME", "name": hostile, "country": "CN"},
        columns=[{"table": "patients", "column": hostile, "role": "sensitive", "technique": "keep",
                  "params": {"note": hostile}}],
    )
    out = render_review(tmp_path, record, class_sizes=[6, 7], signing_fingerprint=signing_key_id(signing_key))
    html = out.read_text("utf-8")
    p = parse(html)
    assert "script" not in p.tags and "img" not in p.tags
    assert fetching_attributes(p) == []
    assert hostile in " ".join(p.text)  # shown, as text


def test_one_record_renders_to_one_page(tmp_path: Path, signing_key: Path):
    kid = signing_key_id(signing_key)
    pages = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        pages.append(render_review(tmp_path / name, make_record(), class_sizes=class_sizes(),
                                   signing_fingerprint=kid).read_bytes())
    assert pages[0] == pages[1]


def test_failed_validation_and_no_exclusions_are_said_plainly(tmp_path: Path, signing_key: Path):
    r = make_record()
    validation = {"success": False, "expectations": [
        {"expectation_type": "expect_min_class_size", "success": False, "observed": 2,
         "description": "k ≥ 6"}]}
    consent = {**r.consent.model_dump(), "excluded_by_reason": {}}
    out = render_review(tmp_path, make_record(validation=validation, consent=consent),
                        class_sizes=[2, 9], signing_fingerprint=signing_key_id(signing_key))
    text = " ".join(parse(out.read_text("utf-8")).text)
    assert "Validation FAILED." in text and "Validation: FAILED (0/1 checks)" in text
    assert "No subject was excluded for consent." in text


def test_the_page_is_covered_by_the_signature(release: Path):
    page = release / "review.html"
    page.write_text(page.read_text("utf-8").replace("PASSED", "PASSED!"), "utf-8")
    assert [c.name for c in verify_release(release).changed] == ["review.html"]


def test_seal_refuses_a_page_that_names_another_key(tmp_path: Path, signing_key: Path):
    from deidflow.errors import DeidflowError
    from deidflow.manifest.seal import write_manifest
    from deidflow.manifest.signing import generate_signing_keys

    other, _ = generate_signing_keys(tmp_path / "other" / "o.key")
    render_review(tmp_path, make_record(), class_sizes=[6], signing_fingerprint=signing_key_id(other))
    with pytest.raises(DeidflowError, match="review.html says it is signed by key"):
        write_manifest(tmp_path, make_record(), signing_key)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=200))
def test_size_histogram_counts_every_record_in_its_band(sizes):
    hist = size_histogram(sizes)
    assert len(hist) == len(_SIZE_LABELS)
    assert sum(hist) == sum(sizes)  # a class of size f holds f records
    assert hist[0] == sum(s for s in sizes if s == 1)
    assert hist[5] == sum(s for s in sizes if 6 <= s <= 10)
    assert hist[-1] == sum(s for s in sizes if s >= 101)


def test_size_histogram_example():
    assert size_histogram([1, 1, 2, 7, 150]) == [2, 2, 0, 0, 0, 7, 0, 0, 0, 150]


# --- headless Chromium -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        if os.environ.get("CI"):
            pytest.fail(f"headless chromium not found at {CHROMIUM}; CI must install it (.ci/run)")
        pytest.skip("headless chromium not installed")
    return CHROMIUM


from browser_proxy import RecordingProxy  # noqa: E402  (tests/browser_proxy.py)


def run_chromium(chromium: str, page: Path, work: Path, *extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Open `page` headless through a recording proxy; return the process and the hosts the
    page (not the browser itself) tried to reach."""
    proxy = RecordingProxy()
    try:
        proc = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
             f"--user-data-dir={work / 'chromium-profile'}",
             f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
             "--virtual-time-budget=3000", *extra, page.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        proxy.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, [h for h in proxy.hosts if not _browser_own(h)]


def artifact_dir(tmp_path: Path) -> Path:
    """Screenshots go to $DEIDFLOW_TEST_ARTIFACTS (CI can keep them) or the test's tmp dir."""
    root = os.environ.get("DEIDFLOW_TEST_ARTIFACTS")
    out = Path(root) / "manifest" if root else tmp_path / "artifacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


def png_size_and_colours(path: Path) -> tuple[int, int, int]:
    """Width, height and number of distinct byte values in the decoded scanlines (a blank or
    one-colour screenshot has very few)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


@pytest.mark.browser
def test_review_renders_in_chromium_with_every_section(chromium: str, release: Path, tmp_path: Path):
    proc, hosts = run_chromium(chromium, release / "review.html", tmp_path, "--dump-dom")
    dom = proc.stdout
    p = parse(dom)
    assert p.sections == [sid for sid, _ in _SECTIONS], (p.sections, len(dom), proc.stderr[-1000:])
    text = " ".join(p.text)
    for _, title in _SECTIONS:
        assert title in text, (title, text[:2000])
    r = make_record()
    for fact in (r.agreement_id, r.recipient.name, r.purpose, *r.consent.excluded_by_reason):
        assert fact in text, fact
    for plot in PLOTS:
        assert any(label.startswith(plot) for label in p.svg_labels), (plot, p.svg_labels)
    assert hosts == [], hosts


@pytest.mark.browser
def test_review_screenshot(chromium: str, release: Path, tmp_path: Path):
    shot = artifact_dir(tmp_path) / "review.png"
    shot.unlink(missing_ok=True)
    run_chromium(chromium, release / "review.html", tmp_path, f"--screenshot={shot}",
                 "--window-size=1280,4800", "--hide-scrollbars")  # the whole page
    assert shot.is_file()
    width, height, values = png_size_and_colours(shot)
    assert (width, height) == (1280, 4800)
    assert shot.stat().st_size > 20_000 and values > 64, (shot.stat().st_size, values)


@pytest.mark.browser
def test_the_browser_would_block_an_external_resource(chromium: str, release: Path, tmp_path: Path):
    """The detector works (a page without the CSP that loads an image is caught), and the
    review page's Content-Security-Policy stops a load even if a URL slipped into it."""
    page = (release / "review.html").read_text("utf-8")
    canary = '<img src="http://canary.deidflow.test/pixel.png" alt="">'
    with_csp = tmp_path / "with-csp.html"
    with_csp.write_text(page.replace("<main>", "<main>" + canary, 1), "utf-8")
    without = tmp_path / "without-csp.html"
    without.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "",
                              with_csp.read_text("utf-8")), "utf-8")
    _, hosts = run_chromium(chromium, without, tmp_path / "a", "--dump-dom")
    assert "canary.deidflow.test" in hosts
    _, hosts = run_chromium(chromium, with_csp, tmp_path / "b", "--dump-dom")
    assert hosts == [], hosts



def test_bar_labels_are_not_cut_off():
    """A long exclusion reason (Latin or Chinese) starts inside the chart: the label column is
    at least as wide as the label's estimated width."""
    from deidflow.manifest.review import bar_chart, text_width

    for label in ("under 14 without guardian consent (art. 31)", "未满十四周岁且无监护人同意（第三十一条）"):
        svg = bar_chart([label, "x"], [("n", [3, 1], "#000")], title="t")
        x = float(re.search(r'<text x="([\d.]+)"[^>]*text-anchor="end"', svg).group(1))
        assert x - text_width(label) >= 0, (label, x, text_width(label))
        width = float(re.search(r'<svg width="(\d+)"', svg).group(1))
        bar = float(re.search(r'<rect x="([\d.]+)" y="\d+" width="([\d.]+)"', svg).group(1))
        assert bar < width - 60


def test_records_chart_uses_the_pipelines_released_count(tmp_path: Path, signing_key: Path):
    counts = {**make_record().counts.model_dump(), "released_subjects": 1600}
    out = render_review(tmp_path, make_record(counts=counts), class_sizes=[6],
                        signing_fingerprint=signing_key_id(signing_key))
    text = " ".join(parse(out.read_text("utf-8")).text)
    assert "released: 1,600" in text
    out = render_review(tmp_path, make_record(), class_sizes=[6], signing_fingerprint=signing_key_id(signing_key))
    assert "released: 1,689" in " ".join(parse(out.read_text("utf-8")).text)  # 2000 − 288 − 23
