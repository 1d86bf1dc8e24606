"""One digest per file while a release is sealed: the review page's file table and the
manifest's subjects share a FileDigests, so each file is read once, the pages and manifest are
byte for byte what separate reads give, and a file that changed after it was read is read again."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from release_sample import build_release, make_record

from deidflow.manifest import statement
from deidflow.manifest.statement import FileDigests, file_sha256
from deidflow.manifest.verify import verify_release


def _counting_reads(monkeypatch) -> dict[str, int]:
    reads: dict[str, int] = {}
    real = hashlib.file_digest

    def counted(fh, digest):
        reads[Path(fh.name).name] = reads.get(Path(fh.name).name, 0) + 1
        return real(fh, digest)

    monkeypatch.setattr(statement.hashlib, "file_digest", counted)
    return reads


def test_a_shared_memo_reads_each_file_once_and_seals_the_same_bytes(tmp_path, signing_key, monkeypatch):
    record = make_record()
    plain = build_release(tmp_path / "plain" / record.release_id, signing_key, record)
    reads = _counting_reads(monkeypatch)
    shared = build_release(tmp_path / "shared" / record.release_id, signing_key, record,
                           digests=FileDigests())
    # data files and validation.json: digested for the review page, reused by the manifest
    assert reads == {"patients.csv": 1, "encounters.csv": 1, "validation.json": 1,
                     "review.html": 1, "signer.pub": 1}
    for name in ("review.html", "manifest.json"):
        assert (shared / name).read_bytes() == (plain / name).read_bytes(), name
    assert verify_release(shared, signing_key.with_suffix(".pub")).ok


def test_a_file_changed_after_it_was_read_is_read_again(tmp_path):
    digests = FileDigests()
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b\n1,2\n")
    assert digests(path) == file_sha256(path)

    path.write_bytes(b"a,b\n1,2\n3,4\n")  # longer
    assert digests(path) == file_sha256(path)

    stat = path.stat()
    time.sleep(0.05)  # past the file system's clock tick, so the change time moves
    path.write_bytes(b"a,b\n1,2\n3,5\n")  # same size, and the old modification time put back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert digests(path) == file_sha256(path) == hashlib.sha256(b"a,b\n1,2\n3,5\n").hexdigest()

    other = tmp_path / "other.csv"  # another file renamed over it: a new inode
    other.write_bytes(b"a,b\n1,2\n3,6\n")
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    other.replace(path)
    assert digests(path) == hashlib.sha256(b"a,b\n1,2\n3,6\n").hexdigest()


def test_verify_reads_every_file_itself(release, signing_key, monkeypatch):
    reads = _counting_reads(monkeypatch)
    assert verify_release(release, signing_key.with_suffix(".pub")).ok
    assert reads == {"patients.csv": 1, "encounters.csv": 1, "validation.json": 1,
                     "review.html": 1, "signer.pub": 1}
