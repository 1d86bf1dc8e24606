"""Keyed pseudonyms (GB/T 37964 pseudonymisation, hash-derived with a key; or encryption-
derived with AES-SIV where the hospital must be able to re-identify).

A pseudonym is a prefix letter and HMAC-SHA256(key, value) truncated to 20 hex characters. The key is derived
per recipient, agreement and scope (`KeyRing.derive`), so one subject's pseudonym is the same
in every table and every run of one recipient's releases and unrelated across recipients.
Without the key nobody can test a guessed identifier against a pseudonym (a plain hash of a
resident ID or a 7-digit patient number is reversed by enumeration in seconds).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.hmac import HMAC

from deidflow.errors import InputError, KeyCustodyError, PolicyError
from deidflow.policy import Column, Role
from deidflow.techniques.base import ApplyContext, Technique

# 20 hex characters = 80 bits. For n subjects the chance that any two share a pseudonym is
# about n^2 / 2^81: at 10 million subjects that is 4e-11, so a collision is not a practical
# concern (and `pseudonyms` checks for one anyway). 15 characters (60 bits) would already give
# 4e-5 at 10M: too close for a join key.
DEFAULT_LENGTH = 20
MIN_LENGTH = 20
MAX_LENGTH = 64  # all 256 bits of the HMAC
REVERSIBLE_PREFIX = "R"


def _hex_labels(digests: bytes, n: int, length: int) -> np.ndarray:
    """The first `length` hex characters of each 32-byte digest, as an array of bytes strings.

    One `bytes.hex()` call over the concatenated digest prefixes (C speed) then a fixed-width
    view: no per-value formatting. Hex rather than base32 because the standard library's
    base32 is a Python loop (0.75 s per million here) and hex is case-proof in every tool.
    """
    nbytes = (length + 1) // 2
    mat = np.frombuffer(digests, dtype=np.uint8).reshape(n, 32)[:, :nbytes]
    text = np.ascontiguousarray(mat).tobytes().hex().encode("ascii")
    return np.frombuffer(text, dtype=f"S{2 * nbytes}").astype(f"S{length}")


def _distinct(digests: bytes, n: int, labels: np.ndarray) -> bool:
    """True if no two labels are equal. The first 64 bits decide almost always (a sort of
    integers); only if they collide are the full labels compared."""
    first = np.frombuffer(digests, dtype=np.uint64).reshape(n, 4)[:, 0].copy()
    first.sort()
    if n < 2 or bool((first[1:] != first[:-1]).all()):
        return True
    return bool(pd.Index(labels).is_unique)


def hmac_digests(key: bytes, values: list[str]) -> bytes:
    """Concatenated 32-byte HMAC-SHA256 digests of `values` (UTF-8).

    No vectorised HMAC exists in numpy or pyarrow; the fastest loop measured here keys the HMAC
    once and copies the keyed state per value (0.76 s per million, REFERENCE ecosystem §4).
    """
    base = HMAC(key, hashes.SHA256())
    out = []
    append = out.append
    for v in values:
        h = base.copy()
        h.update(v.encode("utf-8"))
        append(h.finalize())
    return b"".join(out)


def _as_text(values: pd.Series) -> pd.Series:
    """Values as strings, so that 123 and "123" get one pseudonym in every table."""
    if isinstance(values.dtype, pd.StringDtype):
        return values
    return values.astype("str")


def _gather(labels: np.ndarray, codes: np.ndarray, like: pd.Series) -> pd.Series:
    """Series of labels[codes] (code -1 → null), built through Arrow without Python objects."""
    present = codes >= 0
    taken = labels[np.where(present, codes, 0)] if len(labels) else np.zeros(len(codes), "S1")
    arr = pa.array(taken, mask=~present, type=pa.binary()).cast(pa.string())
    return pd.Series(pd.arrays.ArrowStringArray(arr), index=like.index, name=like.name)


def pseudonyms(
    values: pd.Series, key: bytes, *, length: int = DEFAULT_LENGTH, prefix: str = ""
) -> pd.Series:
    """Keyed pseudonyms of `values` (nulls stay null). Each distinct value is hashed once."""
    codes, uniques = pd.factorize(_as_text(values), use_na_sentinel=True)
    texts = uniques.tolist()
    n = len(texts)
    if n == 0:
        return _gather(np.array([], dtype="S1"), codes, values)
    digests = hmac_digests(key, texts)
    labels = _hex_labels(digests, n, length)
    if not _distinct(digests, n, labels):  # ~1e-11 at 10M: never merge two subjects
        raise InputError(
            f"two distinct values received the same {length}-character pseudonym",
            fix="increase params.length (e.g. to 32) for this column",
        )
    if prefix:
        labels = np.char.add(prefix.encode("utf-8"), labels)
    return _gather(labels, codes, values)


def reversible_pseudonyms(values: pd.Series, key: bytes) -> pd.Series:
    """AES-SIV pseudonyms: deterministic (same value → same token under one key), and
    decryptable by `reidentify` with the same key only. Each distinct value encrypted once."""
    siv = AESSIV(key)
    codes, uniques = pd.factorize(values.astype("string"), use_na_sentinel=True)
    tokens = np.array(
        [REVERSIBLE_PREFIX + siv.encrypt(str(u).encode("utf-8"), None).hex() for u in uniques],
        dtype=object,
    )
    out = np.empty(len(codes), dtype=object)
    present = codes >= 0
    out[present] = tokens[codes[present]] if len(tokens) else []
    out[~present] = None
    return pd.Series(out, index=values.index, dtype="string", name=values.name)


def reidentify(pseudonyms: pd.Series, key: bytes) -> pd.Series:
    """The original values of reversible pseudonyms, for the hospital only.

    `key` is `KeyRing.reidentification_key(scope)` of the release that produced them. A token
    that was altered, or made under another key, is refused (AES-SIV authenticates), with a
    count, never the token.
    """
    siv = AESSIV(key)
    codes, uniques = pd.factorize(pseudonyms.astype("string"), use_na_sentinel=True)
    plain: list[str | None] = []
    bad = 0
    for tok in uniques:
        tok = str(tok)
        try:
            if not tok.startswith(REVERSIBLE_PREFIX):
                raise ValueError
            plain.append(siv.decrypt(bytes.fromhex(tok[len(REVERSIBLE_PREFIX):]), None).decode("utf-8"))
        except (ValueError, InvalidTag, UnicodeDecodeError):
            plain.append(None)
            bad += 1
    if bad:
        raise KeyCustodyError(
            f"{bad} distinct pseudonym(s) cannot be decrypted with this key",
            column=str(pseudonyms.name) if pseudonyms.name is not None else None,
            fix="use the re-identification key of the release that produced them (same "
            "recipient, agreement and scope); check the fingerprint in its manifest",
        )
    arr = np.array(plain, dtype=object)
    out = np.empty(len(codes), dtype=object)
    present = codes >= 0
    out[present] = arr[codes[present]] if len(arr) else []
    out[~present] = None
    return pd.Series(out, index=pseudonyms.index, dtype="string", name=pseudonyms.name)


def default_prefix(scope: str) -> str:
    """One upper-case letter from the scope ("patient" → "P"), so a reader can tell link keys
    apart; it carries no information about the subject."""
    for ch in scope:
        if ch.isascii() and ch.isalpha():
            return ch.upper()
    return "X"


class Pseudonymise(Technique):
    """Replace identifiers by keyed pseudonyms (link keys stay joinable across tables)."""

    name = "pseudonymise"
    roles = frozenset({Role.link_key, Role.direct_identifier})
    allowed_params = frozenset({"scope", "reversible", "length", "prefix"})

    def check(self, column: str, spec: Column) -> None:
        super().check(column, spec)
        p = spec.params
        scope = p.get("scope", column)
        if not isinstance(scope, str) or not scope.strip():
            raise PolicyError(
                f"column '{column}': params.scope must be a non-empty string",
                fix="use the same scope (e.g. 'patient') wherever one kind of id appears",
            )
        if not isinstance(p.get("reversible", False), bool):
            raise PolicyError(
                f"column '{column}': params.reversible must be true or false",
                fix="reversible: true (hospital can re-identify) or false (default)",
            )
        length = p.get("length", DEFAULT_LENGTH)
        if isinstance(length, bool) or not isinstance(length, int) or not (
            MIN_LENGTH <= length <= MAX_LENGTH
        ):
            raise PolicyError(
                f"column '{column}': params.length must be an integer from {MIN_LENGTH} to "
                f"{MAX_LENGTH} (got {length!r})",
                fix=f"omit it for {DEFAULT_LENGTH} (80 bits, collision-safe at 10M subjects)",
            )
        if p.get("reversible") and "length" in p:
            raise PolicyError(
                f"column '{column}': params.length does not apply to reversible pseudonyms "
                "(their length follows the value's)",
                fix="remove params.length or set reversible: false",
            )
        prefix = p.get("prefix", "")
        if not isinstance(prefix, str) or len(prefix) > 8:
            raise PolicyError(
                f"column '{column}': params.prefix must be a string of at most 8 characters",
                fix="e.g. prefix: 'P'",
            )

    def _scope(self, spec: Column, ctx: ApplyContext) -> str:
        return str(spec.params.get("scope", ctx.column))

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series:
        if ctx.keyring is None:
            raise KeyCustodyError(
                "pseudonymisation needs the key ring", column=ctx.column,
                fix="load it with KeyRing.from_policy(loaded) and pass it in the ApplyContext",
            )
        scope = self._scope(spec, ctx)
        try:
            if spec.params.get("reversible", False):
                return reversible_pseudonyms(values, ctx.keyring.reidentification_key(scope))
            prefix = spec.params.get("prefix", default_prefix(scope))
            length = spec.params.get("length", DEFAULT_LENGTH)
            return pseudonyms(values, ctx.keyring.derive(scope), length=length, prefix=prefix)
        except InputError as exc:
            raise InputError(exc.message, file=ctx.table, column=ctx.column, fix=exc.fix) from None

    def describe(self, spec: Column, ctx: ApplyContext) -> dict[str, Any]:
        scope = self._scope(spec, ctx)
        reversible = bool(spec.params.get("reversible", False))
        out: dict[str, Any] = {
            "technique": self.name,
            "params": {
                "scope": scope,
                "reversible": reversible,
                "algorithm": "AES-SIV (RFC 5297), key derived with HKDF-SHA256"
                if reversible
                else "HMAC-SHA256, key derived with HKDF-SHA256 per recipient/agreement/scope",
            },
        }
        if not reversible:
            out["params"]["length"] = spec.params.get("length", DEFAULT_LENGTH)
            out["params"]["prefix"] = spec.params.get("prefix", default_prefix(scope))
        if ctx.keyring is not None:
            out["key_fingerprint"] = (
                ctx.keyring.reidentification_fingerprint(scope)
                if reversible
                else ctx.keyring.fingerprint(scope)
            )
            out["master_key_fingerprint"] = ctx.keyring.fingerprint()
        return out
