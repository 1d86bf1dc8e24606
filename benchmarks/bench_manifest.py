"""Provenance benchmarks: sealing and verifying a release, and rendering its review page.

    .venv/bin/python benchmarks/bench_manifest.py                 # 256 MB in 40 files
    .venv/bin/python benchmarks/bench_manifest.py --mb 1024 --files 200 --classes 200000

Sealing and verification are dominated by SHA-256 over every released byte (hashlib streams
the file, so memory stays flat); the review page by the histograms over class sizes (NumPy).
The data files are random bytes written once per run into a temporary directory; the page cache
is warm, so the figures are the CPU cost, not the disk's. Prints a table; rerunnable.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "manifest"))

from deidflow.manifest.review import render_review  # noqa: E402
from deidflow.manifest.seal import write_manifest  # noqa: E402
from deidflow.manifest.signing import generate_signing_keys, signing_key_id  # noqa: E402
from deidflow.manifest.verify import verify_release  # noqa: E402
from release_sample import make_record  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="total size of the released data files")
    ap.add_argument("--files", type=int, default=40, help="number of data files")
    ap.add_argument("--classes", type=int, default=100_000, help="equivalence classes on the review page")
    ap.add_argument("--repeat", type=int, default=3, help="runs per step (best is reported)")
    args = ap.parse_args()

    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="bench-manifest-") as tmp:
        tmp = Path(tmp)
        key, pub = generate_signing_keys(tmp / "keys" / "signing.key")
        release = tmp / "release"
        (release / "data").mkdir(parents=True)
        per_file = args.mb * 1024 * 1024 // args.files
        for i in range(args.files):
            (release / "data" / f"part-{i:04d}.parquet").write_bytes(os.urandom(per_file))
        total = per_file * args.files
        record = make_record()
        sizes = rng.integers(5, 80, size=args.classes)
        before = rng.integers(1, 6, size=args.classes * 3)

        t_review, _ = timed(
            lambda: render_review(release, record, class_sizes=sizes, class_sizes_before=before,
                                  signing_fingerprint=signing_key_id(key)),
            args.repeat,
        )
        t_seal, _ = timed(lambda: write_manifest(release, record, key), args.repeat)
        t_verify, report = timed(lambda: verify_release(release, pub), args.repeat)
        assert report.ok, report.messages()
        page_kb = (release / "review.html").stat().st_size / 1024

    mb = total / 1024 / 1024
    t = Table(title=f"manifest: {mb:,.0f} MB in {args.files} files, {args.classes:,} classes "
              f"(best of {args.repeat})", title_justify="left")
    t.add_column("step")
    t.add_column("seconds", justify="right")
    t.add_column("throughput", justify="right")
    t.add_row("render review.html", f"{t_review:.3f}", f"{args.classes / t_review:,.0f} classes/s ({page_kb:,.0f} KB page)")
    t.add_row("seal (digest + sign)", f"{t_seal:.3f}", f"{mb / t_seal:,.0f} MB/s")
    t.add_row("verify (digest + check)", f"{t_verify:.3f}", f"{mb / t_verify:,.0f} MB/s")
    Console().print(t)


if __name__ == "__main__":
    main()
