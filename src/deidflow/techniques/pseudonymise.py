"""Keyed pseudonyms (GB/T 37964 pseudonymisation, hash-derived with a key; or encryption-
derived with AES-SIV where the hospital must be able to re-identify).

A pseudonym is a prefix letter and the first 20 hex characters (80 bits) of a keyed PRF of the
value's UTF-8 bytes. The PRF is AES-CMAC (NIST SP 800-38B, RFC 4493; AES-256 under the derived
key) by default, `method: hmac` selects HMAC-SHA256. Both are standard PRFs; CMAC is the
default because it has a vectorised form: AES-ECB over one buffer holding every value's n-th
block computes that block of all the MACs in one C call, so a million values cost one AES call
per block position (16 bytes of value each) instead of a million Python-level HMAC calls, which
nothing in numpy, pyarrow or cryptography can batch. The result is byte-for-byte the standard
CMAC (tests compare it with `cryptography`'s CMAC and the RFC 4493 vectors).

The key is derived per recipient, agreement, scope and algorithm (`KeyRing.derive`), so one
subject's pseudonym is the same in every table and every run of one recipient's releases and
unrelated across recipients, and a CMAC key is never an HMAC key. Without the key nobody can
test a guessed identifier against a pseudonym (a plain hash of a resident ID or a 7-digit
patient number is reversed by enumeration in seconds).

Within one release partition the caller passes one `memo` dict to every column. HMAC uses it:
each distinct value of a (key, length, prefix) is hashed once per partition and checked for
label collisions against every value of that scope seen before, in any table. CMAC does not:
finding a column's distinct values again (one Arrow hash pass) and MACing them costs less than
looking them up in the memo (the lookup rebuilds a hash table of every value seen), and the
memo would keep every id column of the partition alive (more CPU time and memory with it,
measured on the 1M-patient extract).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.hmac import HMAC

from deidflow.errors import InputError, KeyCustodyError, PolicyError
from deidflow.idcolumns import run_heads, run_lengths
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

# method (policy name) -> (algorithm bound into the key derivation, digest bytes, manifest text)
CMAC, HMAC_METHOD = "cmac", "hmac"
DEFAULT_METHOD = CMAC
METHODS: dict[str, tuple[str | None, int, str]] = {
    # HMAC keeps the derivation it had before algorithms were bound (no algorithm field), so
    # `method: hmac` reproduces earlier releases' pseudonyms; the CMAC key is a different key.
    CMAC: ("aes-cmac", 16, "AES-CMAC (NIST SP 800-38B, AES-256)"),
    HMAC_METHOD: (None, 32, "HMAC-SHA256"),
}

STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str", Arrow-backed
_HEX_PAIRS = np.array(
    [ord(a) | (ord(b) << 8) for a in "0123456789abcdef" for b in "0123456789abcdef"], dtype="<u2"
)  # byte -> its two hex characters, as one little-endian uint16 ("ab" = 0x6261)


# --- AES-CMAC, vectorised --------------------------------------------------------------------


def _arrow_text(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous large_string Arrow array of the values (zero-copy for Arrow-backed text;
    other dtypes are converted to text first, so that 123 and "123" are one value). Binary
    Arrow input stays bytes (large_binary), for MACs of raw messages."""
    if isinstance(values, pd.Series):
        if not isinstance(values.dtype, pd.StringDtype):
            values = values.astype(STR_DTYPE)
        values = pa.array(values.array)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if pa.types.is_binary(values.type) or pa.types.is_fixed_size_binary(values.type):
        return values.cast(pa.large_binary())
    if not (pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)):
        values = values.cast(pa.large_string())
    return values


def _shift_left(block: bytes) -> bytes:
    """RFC 4493 subkey step: shift a 128-bit block left by one, xor 0x87 if a bit fell out."""
    v = int.from_bytes(block, "big") << 1
    if v >> 128:
        v = (v & ((1 << 128) - 1)) ^ 0x87
    return v.to_bytes(16, "big")


def cmac_tags(values: pd.Series | pa.Array | pa.ChunkedArray, key: bytes) -> np.ndarray:
    """The AES-CMAC (RFC 4493) of each value's UTF-8 bytes, as an (n, 16) uint8 array.

    Values are packed into zero-filled (m, blocks * 16) matrices, one per block count (values
    of one byte length are contiguous after a sort by length, so each length is a reshape of
    Arrow's data buffer, not a per-value copy); the last block gets the 10* padding and K1
    (complete) or K2 (padded). Then one AES-ECB call per block position runs the CBC chain of
    every value of the group at once. Null rows get the tag of the empty string: callers mask
    them.
    """
    arr = _arrow_text(values)
    n = len(arr)
    if n == 0:
        return np.empty((0, 16), dtype=np.uint8)
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    k1 = _shift_left(enc.update(bytes(16)))
    k2 = np.frombuffer(_shift_left(k1), dtype=np.uint8)
    k1 = np.frombuffer(k1, dtype=np.uint8)

    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n + 1, offset=8 * arr.offset)
    lengths = np.diff(offsets)
    if arr.null_count:
        lengths[~np.asarray(arr.is_valid())] = 0
    order = None
    if arr.null_count or lengths.min() != lengths.max():
        order = np.argsort(lengths, kind="stable")
        arr = arr.take(pa.array(order))
        lengths = lengths[order]
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n + 1, offset=8 * arr.offset)
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    nblocks = np.maximum(1, (lengths + 15) // 16) if order is not None else None
    cuts = np.flatnonzero(np.diff(nblocks)) + 1 if order is not None else np.zeros(0, np.int64)
    parts = []
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, n]):
        rows = stop - start
        nb = max(1, (int(lengths[start]) + 15) // 16)
        width = nb * 16
        # The chaining value lives in a buffer 16 bytes longer than its blocks: AES-ECB runs in
        # place there (`update_into` needs the slack; `update` would allocate a new bytes
        # object per call, ten times the cost of the AES itself on a million blocks).
        xbuf = np.empty(16 * rows + 16, dtype=np.uint8)
        x = xbuf[: 16 * rows].reshape(rows, 16)
        m = x if nb == 1 else np.zeros((rows, width), dtype=np.uint8)
        lcuts = np.flatnonzero(np.diff(lengths[start:stop])) + 1 + start
        for a, b in zip(np.r_[start, lcuts], np.r_[lcuts, stop]):
            ln = int(lengths[a])
            sub = m[a - start:b - start]
            if ln:
                sub[:, :ln] = data[offsets[a]:offsets[b]].reshape(b - a, ln)
            if ln == width:  # complete last block
                sub[:, width - 16:] ^= k1
            else:  # 10* padding
                sub[:, ln] = 0x80
                sub[:, ln + 1:] = 0
                sub[:, width - 16:] ^= k2
        if nb > 1:
            x[:] = m[:, :16]
        enc.update_into(x, xbuf)
        for i in range(1, nb):
            x ^= m[:, 16 * i:16 * (i + 1)]
            enc.update_into(x, xbuf)
        parts.append(x)
    if order is None:
        return parts[0]
    tags = np.empty((n, 16), dtype=np.uint8)
    tags[order] = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return tags


def cmac_digests(key: bytes, values: list[str]) -> bytes:
    """Concatenated 16-byte AES-CMAC tags of `values` (UTF-8); the list form of `cmac_tags`."""
    return cmac_tags(pa.array(values, type=pa.large_string()), key).tobytes()


def hmac_digests(key: bytes, values: list[str]) -> bytes:
    """Concatenated 32-byte HMAC-SHA256 digests of `values` (UTF-8).

    No vectorised HMAC exists in numpy or pyarrow; the fastest loop measured here keys the HMAC
    once and copies the keyed state per value (REFERENCE ecosystem §4).
    """
    base = HMAC(key, hashes.SHA256())
    out = []
    append = out.append
    for v in values:
        h = base.copy()
        h.update(v.encode("utf-8"))
        append(h.finalize())
    return b"".join(out)


def _tags(method: str, values: pa.LargeStringArray, key: bytes) -> np.ndarray:
    if method == CMAC:
        return cmac_tags(values, key)
    texts = values.to_pylist()
    return np.frombuffer(hmac_digests(key, texts), dtype=np.uint8).reshape(len(texts), 32)


# --- labels ----------------------------------------------------------------------------------


def _labels(tags: np.ndarray, length: int, prefix: bytes, validity: pa.Array | None = None) -> pa.Array:
    """Arrow large_string array: prefix + the first `length` hex characters of each tag, built
    as one (n, width) byte matrix that becomes Arrow's data buffer (no per-value objects)."""
    n = len(tags)
    nbytes = (length + 1) // 2
    width = len(prefix) + length
    mat = np.empty((n, width), dtype=np.uint8)
    if prefix:
        mat[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    hexed = _HEX_PAIRS[tags[:, :nbytes]].view(np.uint8).reshape(n, 2 * nbytes)
    mat[:, len(prefix):] = hexed[:, :length]
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    bitmap, nulls = None, 0
    if validity is not None and validity.null_count:
        mask = pc.is_valid(validity)
        bitmap, nulls = mask.buffers()[1], validity.null_count
    return pa.Array.from_buffers(
        pa.large_string(), n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(mat)], null_count=nulls
    )


def _first_words(tags: np.ndarray) -> np.ndarray:
    """The first 64 bits of each tag, as a new array (callers sort it in place)."""
    return np.array(tags[:, :8], copy=True).view(np.uint64).ravel()


def _all_distinct(words: np.ndarray) -> bool:
    """True if no two 64-bit words are equal (a sort of integers, in place: `words` is a
    private copy whose order nobody relies on)."""
    if len(words) < 2:
        return True
    words.sort()
    return bool((words[1:] != words[:-1]).all())


def _collision() -> InputError:
    return InputError(
        "two distinct values received the same pseudonym",
        fix="increase params.length (e.g. to 32) for this column",
    )


def _check_distinct(words: np.ndarray, labels: pa.Array) -> None:
    """Refuse if two distinct values share a label. `words` and `labels` belong to distinct
    values. The first 64 bits decide almost always; only if they collide are labels compared
    (labels are at least 80 bits, so equal words need not mean equal labels)."""
    if not _all_distinct(words) and len(pc.unique(labels)) != len(labels):
        raise _collision()


@dataclass
class _Labelled:
    """The distinct values of one (method, key, length, prefix) seen so far in a partition,
    their labels, and their MACs' first 64 bits in no particular order (for the collision check
    of new values)."""

    values: pa.Array
    labels: pa.Array
    words: np.ndarray

    def add(self, values: pa.Array, labels: pa.Array, words: np.ndarray) -> None:
        union = np.concatenate([self.words, words])
        if not _all_distinct(union):
            _check_distinct(union, pa.concat_arrays([self.labels, labels]))
        self.values = pa.concat_arrays([self.values, values])
        self.labels = pa.concat_arrays([self.labels, labels])
        self.words = union


def _memo_key(method: str, key: bytes, length: int, prefix: str) -> tuple[str, str, int, str]:
    # A one-way digest of the key, so the memo (held for a whole partition) never holds a key.
    return ("pseudonym", method + ":" + hashlib.sha256(b"deidflow/memo/v1" + key).hexdigest(), length, prefix)


def _as_series(arr: pa.Array, like: pd.Series) -> pd.Series:
    return pd.Series(pd.array(arr, dtype=STR_DTYPE), index=like.index, name=like.name, copy=False)


def pseudonyms(
    values: pd.Series,
    key: bytes,
    *,
    length: int = DEFAULT_LENGTH,
    prefix: str = "",
    method: str = DEFAULT_METHOD,
    memo: dict[Any, Any] | None = None,
) -> pd.Series:
    """Keyed pseudonyms of `values` (nulls stay null), Arrow-backed "str".

    `key` must be the key derived for `method` (`KeyRing.derive(scope,
    algorithm=METHODS[method][0])`). Two distinct values with one label are refused.

    HMAC (a Python loop) hashes each distinct value once; with a `memo` shared by the columns
    of a partition, values seen in an earlier column are looked up, not hashed again, and new
    values are checked against all earlier ones for a label collision. CMAC ignores the memo
    (see the module docstring) and is cheap enough per row (one AES block for ids up to 15
    bytes) that a column of distinct values (a primary key) is labelled row by row: finding
    its distinct values would cost more (a string hash table) than the MACs.
    """
    if method not in METHODS or not 1 <= length <= 2 * METHODS[method][1]:
        raise ValueError(f"pseudonym method {method!r} cannot give {length} hex characters")
    arr = _arrow_text(values)
    pfx = prefix.encode("utf-8")
    if method == CMAC:
        memo = None
    mkey = _memo_key(method, key, length, prefix)
    entry: _Labelled | None = memo.get(mkey) if memo is not None else None
    if entry is None:
        valid = arr.drop_null() if arr.null_count else arr
        head = valid.slice(0, 65536)  # a column of repeated ids shows it here: skip the row path
        if method == CMAC and len(valid) and pc.count_distinct(head).as_py() == len(head):
            tags = cmac_tags(valid, key)
            words = _first_words(tags)
            if _all_distinct(words):  # every value distinct: label each row, no lookup needed
                labels = _labels(tags, length, pfx)
                if not arr.null_count:
                    return _as_series(labels, values)
                where = pc.subtract(pc.cumulative_sum(pc.cast(pc.is_valid(arr), pa.int64())), 1)
                return _as_series(labels.take(pc.if_else(pc.is_valid(arr), where, None)), values)
        # Distinct values and each row's index: one hash pass, over the first row of each run
        # of equal values only when runs are long (a child table keeps a subject's rows together).
        starts = run_heads(arr, min_run=3)
        probe = arr if starts is None else arr.take(pa.array(starts))
        encoded = pc.dictionary_encode(probe)
        uniques = encoded.dictionary
        tags = _tags(method, uniques, key)
        words = _first_words(tags)
        labels = _labels(tags, length, pfx)
        _check_distinct(words, labels)
        if memo is not None:
            memo[mkey] = _Labelled(uniques, labels, words)
        index = encoded.indices
        if starts is not None:
            rows = np.repeat(index.fill_null(0).to_numpy(zero_copy_only=False), run_lengths(starts, len(arr)))
            missing = ~np.asarray(arr.is_valid()) if arr.null_count else None
            index = pa.array(rows, mask=missing)
        return _as_series(labels.take(index), values)
    idx = pc.index_in(arr, value_set=entry.values)
    missing = pc.and_(pc.is_null(idx), pc.is_valid(arr))
    if pc.any(missing).as_py():  # values this partition has not labelled yet
        new = pc.unique(arr.filter(missing))
        tags = _tags(method, new, key)
        entry.add(new, _labels(tags, length, pfx), _first_words(tags))
        idx = pc.index_in(arr, value_set=entry.values)
    return _as_series(entry.labels.take(idx), values)


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
    allowed_params = frozenset({"scope", "reversible", "length", "prefix", "method"})

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
        method = p.get("method", DEFAULT_METHOD)
        if method not in METHODS:
            raise PolicyError(
                f"column '{column}': params.method must be one of {sorted(METHODS)} (got {method!r})",
                fix="omit it for cmac (AES-CMAC, the default); hmac selects HMAC-SHA256",
            )
        if p.get("reversible") and "method" in p:
            raise PolicyError(
                f"column '{column}': params.method does not apply to reversible pseudonyms "
                "(they are AES-SIV encryptions)",
                fix="remove params.method or set reversible: false",
            )
        longest = min(MAX_LENGTH, 2 * METHODS[method][1])
        length = p.get("length", DEFAULT_LENGTH)
        if isinstance(length, bool) or not isinstance(length, int) or not (
            MIN_LENGTH <= length <= longest
        ):
            more = " (method: hmac allows up to 64)" if longest < MAX_LENGTH else ""
            raise PolicyError(
                f"column '{column}': params.length must be an integer from {MIN_LENGTH} to "
                f"{longest} for method {method}{more} (got {length!r})",
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
            method = spec.params.get("method", DEFAULT_METHOD)
            key = ctx.keyring.derive(scope, algorithm=METHODS[method][0])
            return pseudonyms(values, key, length=length, prefix=prefix, method=method, memo=ctx.memo)
        except InputError as exc:
            raise InputError(exc.message, file=ctx.table, column=ctx.column, fix=exc.fix) from None

    def describe(self, spec: Column, ctx: ApplyContext) -> dict[str, Any]:
        scope = self._scope(spec, ctx)
        reversible = bool(spec.params.get("reversible", False))
        method = spec.params.get("method", DEFAULT_METHOD)
        out: dict[str, Any] = {
            "technique": self.name,
            "params": {
                "scope": scope,
                "reversible": reversible,
                "algorithm": "AES-SIV (RFC 5297), key derived with HKDF-SHA256"
                if reversible
                else f"{METHODS[method][2]}, key derived with HKDF-SHA256 per "
                "recipient/agreement/scope/algorithm",
            },
        }
        if not reversible:
            out["params"]["method"] = method
            out["params"]["length"] = spec.params.get("length", DEFAULT_LENGTH)
            out["params"]["prefix"] = spec.params.get("prefix", default_prefix(scope))
        if ctx.keyring is not None:
            out["key_fingerprint"] = (
                ctx.keyring.reidentification_fingerprint(scope)
                if reversible
                else ctx.keyring.fingerprint(scope, algorithm=METHODS[method][0])
            )
            out["master_key_fingerprint"] = ctx.keyring.fingerprint()
        return out
