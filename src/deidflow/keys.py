"""Key custody: the pseudonymisation master secret and the keys derived from it.

The master secret lives outside the data and the policy: in an environment variable (for
schedulers with a secret store) or in a key file readable by its owner only (0600). Every key a
technique uses is *derived* from it with HKDF-SHA256, bound to the recipient, the data-sharing
agreement, a scope (e.g. "patient"), a purpose and, where one purpose offers several, the
algorithm (AES-CMAC or HMAC-SHA256 pseudonyms never share a key), so that

- the same subject gets the same pseudonym in every table and every run for one recipient, and
- two recipients (or two agreements with one recipient) get unrelated pseudonyms and cannot
  join their releases.

The manifest records *fingerprints* (a one-way digest that identifies a key), never a key.
Reversible pseudonyms use a second, hospital-held key (AES-SIV); see docs/keys.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from deidflow.errors import KeyCustodyError

if TYPE_CHECKING:  # pragma: no cover
    from deidflow.policy import LoadedPolicy

log = logging.getLogger(__name__)

MASTER_KEY_BYTES = 32  # 256-bit master secret: HKDF-SHA256 gains nothing from a longer one
SIV_KEY_BYTES = 64  # AES-SIV with two AES-256 keys
_HKDF_SALT = b"deidflow/hkdf/v1"  # fixed, public: domain separation from other uses of a key
_FINGERPRINT_LABEL = b"deidflow/fingerprint/v1"
_NEW_KEY_HINT = 'python -c "import secrets; print(secrets.token_hex(32))"'


def fingerprint_of(key: bytes) -> str:
    """A short one-way digest that identifies a key without revealing it.

    SHA-256 over a fixed label and the key: the label keeps a fingerprint from being equal to
    any other hash of the key used elsewhere. 64 bits are enough to tell keys apart in a
    manifest; they are not enough (nor meant) to search the key space.
    """
    return "sha256:" + hashlib.sha256(_FINGERPRINT_LABEL + key).hexdigest()[:16]


def _encode_info(*parts: tuple[str, str]) -> bytes:
    """HKDF info with each field length-prefixed, so that ("ab", "c") and ("a", "bc") can
    never derive the same key (a plain separator could be forged by an id containing it)."""
    out = bytearray(b"deidflow:v1")
    for label, value in parts:
        raw = value.encode("utf-8")
        out += label.encode("ascii") + b"=" + len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def hkdf(secret: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_HKDF_SALT, info=info).derive(
        secret
    )


def _parse_hex_key(text: str, *, where: str, file: str | None, expected: int) -> bytes:
    """Decode a hex key; errors say where and how long, never what the text was."""
    cleaned = text.strip()
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        raise KeyCustodyError(
            f"{where} is not a hexadecimal key",
            file=file,
            fix=f"store {expected} random bytes as hex, e.g. {_NEW_KEY_HINT}",
        ) from None
    if len(key) < expected:
        raise KeyCustodyError(
            f"{where} holds a {len(key)}-byte key; at least {expected} bytes are required",
            file=file,
            fix=f"generate a new key, e.g. {_NEW_KEY_HINT}",
        )
    return key


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyCustodyError(
            f"key file is accessible by group or others (mode {stat.S_IMODE(mode):o})",
            file=str(path),
            fix=f"chmod 600 {path}",
        )


def _write_private(path: Path, text: str) -> None:
    """Create `path` with mode 0600 from the start (no window where it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)


def read_key_file(path: Path, *, expected: int = MASTER_KEY_BYTES) -> bytes:
    """A hex key from a 0600 file. Refuses files readable by group or others."""
    if not path.is_file():
        raise KeyCustodyError(
            "key file not found", file=str(path), fix="check keys.* in the policy, or restore it"
        )
    _check_private(path)
    return _parse_hex_key(
        path.read_text(encoding="ascii", errors="replace"),
        where="key file",
        file=str(path),
        expected=expected,
    )


def create_key_file(path: Path, nbytes: int = MASTER_KEY_BYTES) -> bytes:
    """Write a new random key (hex) to `path` with mode 0600; refuse to overwrite."""
    if path.exists():
        raise KeyCustodyError(
            "key file already exists; refusing to overwrite it",
            file=str(path),
            fix="use rotate_master_key to replace a key (the old one is kept as retired)",
        )
    key = secrets.token_bytes(nbytes)
    _write_private(path, key.hex() + "\n")
    return key


def rotate_master_key(path: str | Path) -> tuple[str, str]:
    """Replace the master key in `path` with a new random one; return (old_fp, new_fp).

    The old key is not deleted: it is renamed to `<name>.retired-<UTC time>-<fingerprint>` in
    the same directory (0600), so that the hospital can still recompute the pseudonyms of past
    releases (e.g. to honour a withdrawal) — the manifest of each release names the fingerprint
    of the key it used. After rotation every pseudonym changes: a recipient cannot link a new
    release to an old one.
    """
    p = Path(path)
    old = read_key_file(p)
    old_fp = fingerprint_of(old)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    retired = p.with_name(f"{p.name}.retired-{stamp}-{old_fp.split(':', 1)[1]}")
    new = secrets.token_bytes(MASTER_KEY_BYTES)
    tmp = p.with_name(p.name + ".new")
    if tmp.exists():
        tmp.unlink()
    _write_private(tmp, new.hex() + "\n")
    os.link(p, retired)  # keep the old key under its retired name before replacing it
    os.chmod(retired, 0o600)
    os.replace(tmp, p)  # atomic: readers see the old key or the new one, never a partial file
    new_fp = fingerprint_of(new)
    log.warning("rotated pseudonym key %s: %s -> %s (retired copy kept)", p, old_fp, new_fp)
    announce_key_created(
        f"new pseudonym master key (the old one kept as {retired.name})", p, new_fp,
        "with the hospital's key custodian, offline, together with the retired key: past "
        "releases need the old one, future ones this one")
    return old_fp, new_fp


def announce_key_created(what: str, path: Path, fingerprint: str, backup: str) -> None:
    """Tell the operator, on stderr and in the log, that a key was made and where its backup
    belongs (a key made silently is a key nobody backs up)."""
    import sys

    text = (f"created {what} at {path} (mode 0600, fingerprint {fingerprint}). "
            f"Back it up {backup}.")
    log.info("%s", text)  # stderr below is what the operator sees; the log is for the record
    print(f"deidflow: {text}", file=sys.stderr, flush=True)


def _refuse_new_key_after_releases(loaded: "LoadedPolicy", path: Path) -> None:
    """A missing key file where the registry records earlier releases: the key was lost or
    moved, not never made. A new key would give the recipient's subjects new pseudonyms."""
    import sqlalchemy as sa

    from deidflow.consent.registry import ConsentRegistry, registry_url_for, release_subjects

    registry = ConsentRegistry(registry_url_for(loaded))
    try:
        with registry.engine.connect() as conn:
            earlier = conn.execute(
                sa.select(release_subjects.c.release_id).distinct().limit(3)
            ).scalars().all()
    finally:
        registry.dispose()
    if earlier:
        raise KeyCustodyError(
            f"pseudonym key file is missing, but the consent registry records earlier releases "
            f"({', '.join(earlier)}{', …' if len(earlier) == 3 else ''}) made with a key; a new "
            "key would re-key the recipient's data",
            file=str(path),
            key="keys.pseudonym_key_file",
            fix="restore the key file from the key custodian's backup (mode 0600), or set "
            f"{loaded.policy.keys.pseudonym_key_env}; use `rotate_master_key` only to re-key on purpose",
        )


class KeyRing:
    """The master secret for one release, bound to its recipient and agreement.

    The secret is held in a private attribute and never appears in repr, str or errors.
    """

    __slots__ = ("_master", "recipient_id", "agreement_id", "source", "created", "_cache",
                 "_reid_path", "_reid")

    def __init__(
        self,
        master: bytes,
        *,
        recipient_id: str,
        agreement_id: str,
        source: str = "memory",
        created: bool = False,
        reidentification_key_file: Path | None = None,
    ) -> None:
        if len(master) < MASTER_KEY_BYTES:
            raise KeyCustodyError(
                f"master key is {len(master)} bytes; at least {MASTER_KEY_BYTES} are required",
                fix=f"generate a new key, e.g. {_NEW_KEY_HINT}",
            )
        self._master = bytes(master)
        self.recipient_id = recipient_id
        self.agreement_id = agreement_id
        self.source = source  # "env:NAME" or "file:PATH" (a location, not a secret)
        self.created = created  # True when the key file was created by this call
        self._cache: dict[tuple[str, str, str | None], bytes] = {}
        self._reid_path = reidentification_key_file
        self._reid: bytes | None = None

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_policy(cls, loaded: "LoadedPolicy") -> "KeyRing":
        """Master secret from the env var `keys.pseudonym_key_env` if set, else from
        `keys.pseudonym_key_file` (relative to the policy), created 0600 on first use."""
        policy = loaded.policy
        keys = policy.keys
        common = dict(
            recipient_id=policy.release.recipient.id,
            agreement_id=policy.release.agreement_id,
            reidentification_key_file=(
                loaded.resolve(keys.reidentification_key_file)
                if keys.reidentification_key_file
                else None
            ),
        )
        env_value = os.environ.get(keys.pseudonym_key_env) if keys.pseudonym_key_env else None
        if env_value:
            master = _parse_hex_key(
                env_value,
                where=f"environment variable {keys.pseudonym_key_env}",
                file=None,
                expected=MASTER_KEY_BYTES,
            )
            return cls(master, source=f"env:{keys.pseudonym_key_env}", **common)
        path = loaded.resolve(keys.pseudonym_key_file)
        created = False
        if not path.exists():
            _refuse_new_key_after_releases(loaded, path)
            master = create_key_file(path)
            created = True
            announce_key_created(
                "pseudonym master key", path, fingerprint_of(master),
                "with the hospital's key custodian, offline (e.g. an encrypted medium in the "
                "safe), never beside the releases: without it the pseudonyms of this release "
                "cannot be reproduced and later releases to the recipient would not link",
            )
        else:
            master = read_key_file(path)
        return cls(master, source=f"file:{path}", created=created, **common)

    # --- derivation ---------------------------------------------------------------------------

    def derive(
        self, scope: str, *, purpose: str = "pseudonym", length: int = 32, algorithm: str | None = None
    ) -> bytes:
        """The key for one scope (e.g. "patient") of this recipient and agreement.

        `purpose` separates uses of one scope (pseudonyms, date shifts, noise), so that no
        technique's output helps attack another's key. `algorithm` (e.g. "aes-cmac") is bound
        into the HKDF info as well, so one derived key never serves two algorithms: the CMAC
        key of a scope is unrelated to its HMAC key. None derives the key exactly as before
        algorithms were bound (the info has no algorithm field, so it cannot equal a bound
        one); HMAC-SHA256 pseudonyms, scrub placeholders and noise seeds use it, each the only
        algorithm of its purpose, so their earlier releases are reproduced unchanged.
        """
        cached = self._cache.get((purpose, scope, algorithm))
        if cached is not None and len(cached) == length:
            return cached
        parts = [
            ("purpose", purpose),
            ("recipient", self.recipient_id),
            ("agreement", self.agreement_id),
            ("scope", scope),
        ]
        if algorithm is not None:
            parts.append(("algorithm", algorithm))
        key = hkdf(self._master, _encode_info(*parts), length)
        self._cache[(purpose, scope, algorithm)] = key
        return key

    def fingerprint(
        self, scope: str | None = None, *, purpose: str = "pseudonym", algorithm: str | None = None
    ) -> str:
        """Fingerprint of the master key (scope None) or of one derived key."""
        if scope is None:
            return fingerprint_of(self._master)
        return fingerprint_of(self.derive(scope, purpose=purpose, algorithm=algorithm))

    # --- reversible pseudonyms (hospital only) ------------------------------------------------

    @property
    def has_reidentification_key(self) -> bool:
        return self._reid_path is not None

    def _reidentification_master(self) -> bytes:
        if self._reid is None:
            if self._reid_path is None:
                raise KeyCustodyError(
                    "reversible pseudonyms need the hospital's re-identification key",
                    key="keys.reidentification_key_file",
                    fix="set keys.reidentification_key_file to a 0600 file holding 64 random "
                    "bytes as hex (python -c \"import secrets; print(secrets.token_hex(64))\")",
                )
            self._reid = read_key_file(self._reid_path, expected=SIV_KEY_BYTES)
        return self._reid

    def reidentification_key(self, scope: str) -> bytes:
        """The AES-SIV key (64 bytes) for reversible pseudonyms of one scope.

        Derived from the hospital-held key and bound to recipient and agreement like the HMAC
        keys, so two recipients' reversible pseudonyms of one subject differ too. Only the
        hospital holds the base key; this derived key is what `reidentify` needs.
        """
        info = _encode_info(
            ("purpose", "reidentify"),
            ("recipient", self.recipient_id),
            ("agreement", self.agreement_id),
            ("scope", scope),
        )
        return hkdf(self._reidentification_master(), info, SIV_KEY_BYTES)

    def reidentification_fingerprint(self, scope: str) -> str:
        return fingerprint_of(self.reidentification_key(scope))

    # --- never show the secret ----------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"KeyRing(recipient={self.recipient_id!r}, agreement={self.agreement_id!r}, "
            f"source={self.source!r}, fingerprint={self.fingerprint()!r})"
        )

    __str__ = __repr__

    def __reduce__(self):  # pragma: no cover - refuse to pickle a secret into a task result
        raise TypeError("a KeyRing cannot be pickled; pass the policy path and load it again")
