"""Ed25519 signing keys and DSSE envelopes.

DSSE (Dead Simple Signing Envelope, the in-toto envelope) signs the pre-authentication
encoding PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, where LEN is
the byte length in ASCII decimal, so that the payload type is signed with the payload and a
signature cannot be replayed over another type. The envelope is
{"payload": base64(body), "payloadType": type, "signatures": [{"keyid", "sig"}]}; several
signatures (pipeline, then approver) may sit in one envelope.

Key custody: the private key is written with mode 0600 (created exclusively, never
overwritten) and refused on load when group or others can read it. A key's id is
"sha256:" + the hex SHA-256 of its raw 32-byte public key; that id is what the manifest and
the review page show, never key bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deidflow.errors import KeyCustodyError

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def short_key_id(keyid: str) -> str:
    """What people read and compare: the first 16 hex digits, grouped."""
    hexpart = keyid.split(":", 1)[-1][:16]
    return " ".join(hexpart[i : i + 4] for i in range(0, 16, 4))


def public_key_path_for(private_key_path: Path) -> Path:
    return Path(private_key_path).with_suffix(".pub")


def generate_signing_keys(private_key_path: Path) -> tuple[Path, Path]:
    """Create an Ed25519 key pair: private key (PEM, 0600) and `<name>.pub` beside it.

    Refuses to overwrite either file: replacing a signing key silently would orphan every
    release signed with it.
    """
    private_key_path = Path(private_key_path)
    public_path = public_key_path_for(private_key_path)
    for p in (private_key_path, public_path):
        if p.exists():
            raise KeyCustodyError(
                "a signing key already exists here; refusing to overwrite it",
                file=str(p),
                fix="keep the existing key, or move it away first if you really mean to "
                "rotate keys (recipients then need the new public key)",
            )
    private_key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Written whole under a temporary name, then linked into place: link() never clobbers a
    # key created between the check above and now, and no reader ever sees a half-written key.
    tmp = private_key_path.with_name(f".{private_key_path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # umask cannot widen it, but be explicit
        os.write(fd, pem)
    finally:
        os.close(fd)
    try:
        os.link(tmp, private_key_path)
    except FileExistsError:
        raise KeyCustodyError(
            "a signing key already exists here; refusing to overwrite it",
            file=str(private_key_path),
            fix="keep the existing key, or move it away first if you really mean to rotate keys",
        ) from None
    finally:
        tmp.unlink()
    _write_public(public_path, key)
    return private_key_path, public_path


def _write_public(public_path: Path, key: Ed25519PrivateKey) -> None:
    """The public half, written whole and renamed into place (concurrent writers of one
    key write the same bytes)."""
    tmp = public_path.with_name(f".{public_path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(public_key_pem(key.public_key()))
    os.replace(tmp, public_path)


def check_signing_files(loaded) -> Path:
    """Both halves of the policy's signing key, checked before any stage runs (a run must not
    get to publish and only then find it cannot sign):

    - both present: custody checked, and the .pub must be the private key's public half;
    - signing.key missing beside signing.pub: an error (the private half was lost or moved;
      a new pair would orphan the key recipients trust);
    - signing.pub missing: written from the private key;
    - neither: a new pair is made now, announced with where its backup belongs.

    When the policy names a trust file, the key must be a trusted executor key in it."""
    from deidflow.keys import announce_key_created
    from deidflow.manifest.trust import check_release_signer_trusted

    private = loaded.resolve(loaded.policy.keys.signing_key_file)
    public = public_key_path_for(private)
    backup = ("with the hospital's key custodian, offline; give the .pub to recipients (and put "
              "it in the trust file) so that `deidflow verify` can prove who signed")
    # The public half is checked first: a run that makes the pair links the private key into
    # place before it writes the public one, so a .pub seen here means the key was there too.
    if public.exists() and not private.exists():
        raise KeyCustodyError(
            f"the signing key is missing, but its public half {public.name} is there: the private "
            "key was lost or moved",
            file=str(private),
            key="keys.signing_key_file",
            fix="restore the private key from the key custodian's backup (mode 0600); only if it "
            f"is lost for good, move {public} away and rerun to make a new pair (recipients then "
            "need the new public key)",
        )
    if not private.exists():
        try:
            generate_signing_keys(private)
        except KeyCustodyError:
            if not private.exists():
                raise
            # another run starting at the same moment made the pair: this run uses it
        else:
            key = load_signing_key(private)
            announce_key_created("release signing key pair", private, key_id(key.public_key()), backup)
    key = load_signing_key(private)
    if not public.exists():
        _write_public(public, key)
        announce_key_created("public signing key (from the private key)", public,
                             key_id(key.public_key()), backup)
    elif key_id(load_public_key(public)) != key_id(key.public_key()):
        raise KeyCustodyError(
            f"{public.name} is not the public half of {private.name}",
            file=str(public),
            key="keys.signing_key_file",
            fix="restore the matching pair from backup; recipients verify with the .pub",
        )
    check_release_signer_trusted(loaded, key.public_key())
    return private


def ensure_signing_key(private_key_path: Path) -> Path:
    """The signing key path, creating the key pair on first use (as `keys init` would) and
    saying so (a release checks both files at its start: `check_signing_files`)."""
    private_key_path = Path(private_key_path)
    if not private_key_path.exists():
        from deidflow.keys import announce_key_created

        try:
            generate_signing_keys(private_key_path)
        except KeyCustodyError:
            if not private_key_path.exists():
                raise
            return ensure_signing_key(private_key_path)  # made by a run starting at the same moment
        announce_key_created("release signing key pair", private_key_path,
                             key_id(load_signing_key(private_key_path).public_key()),
                             "with the hospital's key custodian, offline; give the .pub to recipients")
    load_signing_key(private_key_path)  # custody checks now, not at the end of a long run
    return private_key_path


def signing_key_id(private_key_path: Path) -> str:
    """The key id ("sha256:…") of the key at `private_key_path`, for `render_review`."""
    return key_id(load_signing_key(private_key_path).public_key())


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    if not path.is_file():
        raise KeyCustodyError(
            "signing key not found",
            file=str(path),
            fix=f"create one with `deidflow keys init --key {path}`",
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyCustodyError(
            f"signing key is readable or writable by group/others (mode {mode:04o})",
            file=str(path),
            fix=f"chmod 600 {path}",
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise KeyCustodyError(
            "not an unencrypted PEM private key",
            file=str(path),
            fix="point keys.signing_key_file at a key made by `deidflow keys init`",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyCustodyError(
            f"signing key is {type(key).__name__}, not Ed25519",
            file=str(path),
            fix="make an Ed25519 key with `deidflow keys init`",
        )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    path = Path(path)
    if not path.is_file():
        raise KeyCustodyError(
            "public key not found",
            file=str(path),
            fix="pass the .pub file the releasing hospital gave you",
        )
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError:
        raise KeyCustodyError(
            "not a PEM public key", file=str(path), fix="pass the .pub file from `deidflow keys init`"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyCustodyError(
            f"public key is {type(key).__name__}, not Ed25519",
            file=str(path),
            fix="pass the Ed25519 .pub file from `deidflow keys init`",
        )
    return key


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign_envelope(
    payload: bytes, signing_key: Ed25519PrivateKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE
) -> dict[str, Any]:
    sig = signing_key.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [
            {"keyid": key_id(signing_key.public_key()), "sig": base64.b64encode(sig).decode("ascii")}
        ],
    }


def add_signature(envelope: dict[str, Any], signing_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A countersignature (e.g. the approver's, checklist 24) over the same PAE."""
    payload = strict_b64decode(envelope["payload"])
    sig = signing_key.sign(pae(envelope["payloadType"], payload))
    kid = key_id(signing_key.public_key())
    others = [s for s in envelope["signatures"] if s.get("keyid") != kid]
    return {
        **envelope,
        "signatures": others + [{"keyid": kid, "sig": base64.b64encode(sig).decode("ascii")}],
    }


def strict_b64decode(text: str) -> bytes:
    """Standard base64 that also refuses non-canonical encodings (stray bits in the last
    character), so that no byte of an envelope can change without the check noticing."""
    if not isinstance(text, str):
        raise ValueError("expected a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


@dataclass(frozen=True)
class SignatureCheck:
    keyid: str
    valid: bool
    reason: str = ""


def check_signature(
    envelope: dict[str, Any], public_key: Ed25519PublicKey
) -> SignatureCheck:
    """Verify the envelope's signature made by `public_key` (matched by key id)."""
    kid = key_id(public_key)
    payload = strict_b64decode(envelope["payload"])
    mine = [s for s in envelope["signatures"] if s.get("keyid") == kid]
    if not mine:
        present = ", ".join(short_key_id(str(s.get("keyid"))) for s in envelope["signatures"])
        return SignatureCheck(kid, False, f"no signature by key {short_key_id(kid)} (present: {present or 'none'})")
    for s in mine:
        try:
            public_key.verify(strict_b64decode(s["sig"]), pae(envelope["payloadType"], payload))
            return SignatureCheck(kid, True)
        except (InvalidSignature, ValueError, KeyError):
            continue
    return SignatureCheck(kid, False, f"signature by key {short_key_id(kid)} does not match the payload")
