"""Which signing keys the hospital trusts: the anchor `deidflow verify` checks releases against.

A release proves who made it only when its signature is checked with a key that did not come
with it. The key shipped inside a release (signer.pub) proves only that the files match what
*someone* signed: a forger who changes the data re-signs with their own key and ships that.
So verification is anchored by default, in this order:

1. `--public-key FILE` (one or more) given on the command line;
2. `--trust FILE`, a trust file (below);
3. `--policy FILE`: the policy's `keys.trust_file` if it names one, else the public half of its
   `keys.signing_key_file` (`signing.pub` beside `signing.key`);
4. the environment variable DEIDFLOW_TRUST_FILE;
5. in the working directory, `.deidflow/trust.yaml`, else `.deidflow/keys/signing.pub` (where
   `deidflow keys init` and the example policy put the hospital's key).

No anchor found is an error, never a silent fall-back to the shipped key. A key file that sits
inside the release being checked is refused wherever it was named: it is the release's own key.

The trust file (YAML) lists keys with who holds them and what they may sign::

    version: 1
    keys:
      - owner: "Data office, Example Hospital"      # who holds the private key
        role: executor                               # default: executor
        public_key: keys/signing.pub                 # relative to this file
        key_id: "sha256:…"                           # optional pin; must match the file

Roles: every key has one, and one key has one role (a key listed twice is refused: the
person who runs the flow must not also be able to approve with the same key). `executor`
signs the pipeline's manifest (every release needs a valid signature by a trusted executor
key); `approver` is the privacy officer's key, whose second signature a release needs when
its signed statement says approval was required (`deidflow.release.approval`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterable

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deidflow.errors import DeidflowError, KeyCustodyError
from deidflow.manifest.signing import key_id, load_public_key

TRUST_FILE_ENV = "DEIDFLOW_TRUST_FILE"
DEFAULT_TRUST_FILES = (Path(".deidflow/trust.yaml"), Path(".deidflow/keys/signing.pub"))


class KeyRole(str, Enum):
    """What a trusted key may sign."""

    executor = "executor"  # the pipeline run that made the release (manifest signature)
    approver = "approver"  # the privacy officer who approved it (second signature, GB/T 37964 5.5)


#: Roles whose valid, trusted signature a release must carry to be verified.
REQUIRED_ROLES: tuple[KeyRole, ...] = (KeyRole.executor,)


class TrustError(DeidflowError):
    """No usable trust anchor: missing, malformed, or taken from the release itself."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    owner: str = Field(min_length=1)
    role: KeyRole = KeyRole.executor
    public_key: str = Field(min_length=1, description="path of the .pub file, relative to the trust file")
    key_id: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$")


class _TrustFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    keys: list[_Entry] = Field(min_length=1)


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    owner: str
    role: KeyRole
    public_key: Ed25519PublicKey
    source: Path  # the .pub file it was read from


@dataclass(frozen=True)
class TrustAnchors:
    """The keys a verification trusts, and where that list came from (printed to the user)."""

    keys: tuple[TrustedKey, ...]
    origin: str

    def by_id(self, kid: str) -> TrustedKey | None:
        return next((k for k in self.keys if k.key_id == kid), None)

    def refuse_inside(self, release_dir: Path) -> None:
        """A key file inside the release under check is the release's own key: refused."""
        root = Path(release_dir).resolve()
        for k in self.keys:
            src = k.source.resolve()
            if src == root or root in src.parents:
                raise TrustError(
                    "this public key is inside the release being checked; a release's own key "
                    "proves only that someone signed it, not who",
                    file=str(k.source),
                    fix="pass the public key the releasing hospital gave you separately "
                    "(--public-key, --trust or --policy), or --shipped-key to check integrity "
                    "only (exit status stays non-zero)",
                )


def _key_from_file(path: Path, owner: str, role: KeyRole, pinned: str | None = None) -> TrustedKey:
    public = load_public_key(path)
    kid = key_id(public)
    if pinned is not None and pinned != kid:
        raise TrustError(
            f"key id pinned in the trust file differs from the key in the file ({kid})",
            file=str(path),
            fix="the key file was replaced: restore the hospital's key, or correct the pin",
        )
    return TrustedKey(kid, owner, role, public, Path(path))


def load_trust_file(path: Path) -> TrustAnchors:
    path = Path(path)
    if not path.is_file():
        raise TrustError("trust file not found", file=str(path),
                         fix="pass the hospital's trust file (see `deidflow verify --help`)")
    if path.suffix == ".pub":  # a bare public key is a trust file of one executor key
        return TrustAnchors((_key_from_file(path, "hospital (signing.pub)", KeyRole.executor),), str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = _TrustFile.model_validate(raw)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TrustError(f"not a YAML trust file ({type(exc).__name__})", file=str(path),
                         fix="see the format in deidflow/manifest/trust.py or the README") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise TrustError(f"{first['msg']}", file=str(path), key=where,
                         fix="each key needs owner, public_key and optionally role (executor)") from None
    keys: list[TrustedKey] = []
    for entry in parsed.keys:
        p = Path(entry.public_key).expanduser()
        p = p if p.is_absolute() else path.parent / p
        key = _key_from_file(p, entry.owner, entry.role, entry.key_id)
        twice = next((k for k in keys if k.key_id == key.key_id), None)
        if twice is not None:
            raise TrustError(
                f"one key is listed twice (as {twice.role.value} of {twice.owner!r} and as "
                f"{key.role.value} of {key.owner!r})",
                file=str(path), key=f"keys ({entry.public_key})",
                fix="give each person and role their own key: the approver's key must not be "
                "the executor's",
            )
        keys.append(key)
    return TrustAnchors(tuple(keys), str(path))


def anchors_from_policy(policy_path: Path) -> TrustAnchors:
    """The policy's trust file, else the public half of its signing key."""
    from deidflow.manifest.signing import public_key_path_for
    from deidflow.policy import load_policy

    loaded = load_policy(policy_path)
    trust_file = getattr(loaded.policy.keys, "trust_file", None)
    if trust_file:
        return load_trust_file(loaded.resolve(trust_file))
    pub = public_key_path_for(loaded.resolve(loaded.policy.keys.signing_key_file))
    owner = f"hospital signing key of policy {Path(policy_path).name} (executor {loaded.policy.plan.executor})"
    return TrustAnchors((_key_from_file(pub, owner, KeyRole.executor),), f"policy {policy_path}")


def resolve_anchors(
    *,
    public_keys: Iterable[Path] = (),
    trust_file: Path | None = None,
    policy: Path | None = None,
    cwd: Path | None = None,
) -> TrustAnchors:
    """The trust anchors for a verification, by the precedence in the module docstring."""
    public_keys = [Path(p) for p in public_keys]
    if public_keys:
        return TrustAnchors(
            tuple(_key_from_file(p, "given with --public-key", KeyRole.executor) for p in public_keys),
            "--public-key",
        )
    if trust_file is not None:
        return load_trust_file(trust_file)
    if policy is not None:
        return anchors_from_policy(policy)
    env = os.environ.get(TRUST_FILE_ENV)
    if env:
        return load_trust_file(Path(env))
    base = Path(cwd) if cwd else Path.cwd()
    for candidate in DEFAULT_TRUST_FILES:
        if (base / candidate).is_file():
            return load_trust_file(base / candidate)
    raise TrustError(
        "no trusted signing key: without one, a forged release re-signed with the forger's own "
        "key would pass",
        fix="pass the hospital's key with --public-key FILE, a trust file with --trust FILE or "
        f"${TRUST_FILE_ENV}, or the release policy with --policy FILE; or put the key at "
        ".deidflow/keys/signing.pub. --shipped-key checks integrity only and still exits 1",
    )


def check_release_signer_trusted(loaded, signing_public: Ed25519PublicKey) -> None:
    """At the start of a run: when the policy names a trust file, the run's signing key must
    be in it as an executor, or every release it makes would fail `deidflow verify`."""
    trust_file = getattr(loaded.policy.keys, "trust_file", None)
    if not trust_file:
        return
    anchors = load_trust_file(loaded.resolve(trust_file))
    kid = key_id(signing_public)
    match = anchors.by_id(kid)
    if match is None or match.role is not KeyRole.executor:
        raise KeyCustodyError(
            f"the signing key (id {kid}) is not an executor key of the trust file",
            file=str(loaded.resolve(trust_file)),
            key="keys.trust_file",
            fix="add the signing key's .pub to the trust file with its owner and role executor, "
            "or point keys.signing_key_file at the trusted key",
        )


def add_trusted_key(trust_file: Path, public_key: Path, *, owner: str, role: KeyRole) -> bool:
    """Add a key to a trust file (created when missing), with its owner, role and pinned id.
    Returns False when the key is already listed with that owner and role; a key listed with
    another owner or role is refused (one key, one person, one role)."""
    trust_file, public_key = Path(trust_file), Path(public_key)
    kid = key_id(load_public_key(public_key))
    entries: list[dict] = []
    if trust_file.exists():
        anchors = load_trust_file(trust_file)  # refuses a malformed file before it is rewritten
        known = anchors.by_id(kid)
        if known is not None:
            if known.owner == owner and known.role is role:
                return False
            raise TrustError(
                f"this key is already trusted as {known.role.value} of {known.owner!r}",
                file=str(trust_file), key=str(public_key),
                fix="make a separate key for each person and role (deidflow keys init --role ...)",
            )
        entries = yaml.safe_load(trust_file.read_text(encoding="utf-8"))["keys"]
    try:
        rel = os.path.relpath(public_key.resolve(), trust_file.resolve().parent)
    except ValueError:  # another drive
        rel = str(public_key.resolve())
    entries.append({"owner": owner, "role": role.value, "public_key": rel, "key_id": kid})
    trust_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = trust_file.with_name(trust_file.name + ".tmp")
    tmp.write_text(yaml.safe_dump({"version": 1, "keys": entries}, allow_unicode=True, sort_keys=False),
                   encoding="utf-8")
    tmp.replace(trust_file)
    return True
