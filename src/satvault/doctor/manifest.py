"""The signed manifest of the installed code: every file of the ``satvault`` package with its
SHA-256, signed with Ed25519 at build time (``satvault doctor manifest --key KEY``), checked
by ``satvault doctor`` against a public key from the settings.

The manifest is JSON::

    {"manifest": {"format": "satvault-manifest/1", "package": "satvault", "version": …,
                  "created_at": …, "files": {"relative/posix/path.py": "<sha256 hex>", …}},
     "public_key": "<hex of the signing key's public half, for information only>",
     "signature": "<hex Ed25519 signature of the canonical JSON of "manifest">"}

The canonical form is ``json.dumps(..., sort_keys=True, separators=(",", ":"))`` in UTF-8.
The key the doctor trusts is the configured one, never the one written in the file: a file
re-signed by somebody else's key fails.

Compiled bytecode (``__pycache__``, ``*.pyc``) is left out: Python writes it on the host and
it differs between interpreters. The manifest's own file (``_manifest.json`` at the top of
the package, when kept there) is left out too.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from satvault.kernel import strictjson

__all__ = ["FORMAT", "MANIFEST_NAME", "IntegrityResult", "ManifestError", "default_manifest_path",
           "generate_key", "hash_tree", "load_private_key", "make_manifest", "package_root",
           "public_key_hex", "verify_manifest", "write_manifest"]

FORMAT = "satvault-manifest/1"
MANIFEST_NAME = "_manifest.json"


class ManifestError(Exception):
    """The manifest or a key cannot be read or is not of the expected form."""


def package_root() -> Path:
    """The folder of the installed ``satvault`` package."""
    import satvault

    return Path(satvault.__file__).resolve().parent


def default_manifest_path(root: Path) -> Path:
    return root / MANIFEST_NAME


def _left_out(rel: Path) -> bool:
    return "__pycache__" in rel.parts or rel.suffix in (".pyc", ".pyo") \
        or rel.as_posix() == MANIFEST_NAME


def hash_tree(root: Path) -> dict[str, str]:
    """Relative POSIX path → SHA-256 hex of every file under ``root`` (bytecode left out)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root)
            if _left_out(rel) or not path.is_file():
                continue
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 16), b""):
                    digest.update(chunk)
            out[rel.as_posix()] = digest.hexdigest()
    return dict(sorted(out.items()))


def _canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8) file, or a file of 64 hex digits."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read the key file {path}: {exc.strerror or exc}") from exc
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ManifestError(f"{path}: not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ManifestError(f"{path}: the key is not an Ed25519 key")
        return key
    try:
        raw = bytes.fromhex(data.decode().strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{path}: neither PEM nor hex") from exc
    if len(raw) != 32:
        raise ManifestError(f"{path}: an Ed25519 private key is 32 bytes, not {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw).hex()


def generate_key(path: str | os.PathLike[str]) -> str:
    """A new Ed25519 key written to ``path`` (PEM, mode 0600, never over an existing file);
    returns the public key's hex, the value of ``code_manifest_public_key``."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ManifestError(f"cannot create {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return public_key_hex(key)


def make_manifest(root: Path, key: Ed25519PrivateKey, *, version: str) -> dict[str, Any]:
    body = {"format": FORMAT, "package": "satvault", "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": hash_tree(root)}
    return {"manifest": body, "public_key": public_key_hex(key),
            "signature": key.sign(_canonical(body)).hex()}


def write_manifest(root: Path, key: Ed25519PrivateKey, out: Path, *, version: str
                   ) -> dict[str, Any]:
    signed = make_manifest(root, key, version=version)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(signed, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)
    return signed


@dataclass(slots=True)
class IntegrityResult:
    files: int
    signature_ok: bool
    version: str = ""
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.signature_ok and not (self.changed or self.missing or self.extra)


def verify_manifest(root: Path, manifest_path: Path, public_key: str) -> IntegrityResult:
    """Check the manifest's signature with ``public_key`` (hex) and every file under ``root``
    against it: changed, missing (listed, not on disk) and extra (on disk, not listed)."""
    try:
        doc = strictjson.loads(manifest_path.read_text())
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest {manifest_path}: "
                            f"{exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ManifestError(f"the manifest {manifest_path} is not JSON") from exc
    body = doc.get("manifest") if isinstance(doc, dict) else None
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(files, dict) \
            or body.get("format") != FORMAT \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ManifestError(f"the manifest {manifest_path} is not a {FORMAT} manifest")
    try:
        verifier = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
        verifier.verify(bytes.fromhex(str(doc.get("signature", ""))), _canonical(body))
        signature_ok = True
    except (ValueError, InvalidSignature):
        signature_ok = False
    actual = hash_tree(root)
    return IntegrityResult(
        files=len(files), signature_ok=signature_ok, version=str(body.get("version", "")),
        changed=sorted(p for p in files if p in actual and actual[p] != files[p]),
        missing=sorted(p for p in files if p not in actual),
        extra=sorted(p for p in actual if p not in files))
