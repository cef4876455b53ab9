"""DKIM signing (RFC 6376, RFC 8463) of rendered messages with dkimpy.

Input: [[dkim.keys]] from config (read once by `load_signer`) and the final message bytes.
Output: the message with one DKIM-Signature per key of the sender's domain (rsa-sha256 and
ed25519-sha256 dual signing when both exist). Key files are read and test-signed at start, so a
bad key is a ConfigError naming `dkim.keys[i].key_file`, never a failure at send time.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dkim
import nacl.signing
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from relay.config import Config
from relay.errors import ConfigError

# Signed when present; the oversigned ones are listed again so nobody can add a second one.
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id",
    "in-reply-to", "references", "list-unsubscribe", "list-unsubscribe-post",
    "feedback-id", "mime-version", "content-type", "content-transfer-encoding",
)  # fmt: skip
OVERSIGNED = ("from", "subject", "list-unsubscribe", "list-unsubscribe-post")
_PROBE = b"From: probe@example.com\r\nSubject: probe\r\n\r\nprobe\r\n"


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str  # lower-case, without trailing dot
    selector: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    private_key: bytes  # PEM (RSA) or base64 seed (Ed25519), as dkimpy wants them
    # The same RSA key loaded once into OpenSSL (see _OpenSslRsaDKIM); None for Ed25519.
    rsa_key: rsa.RSAPrivateKey | None = field(default=None, compare=False, repr=False)


class DkimSigner:
    """Signs with the keys of the From domain, or of its nearest configured parent domain
    (a parent's d= still aligns with the From domain under relaxed DMARC alignment)."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        self._by_domain: dict[str, list[DkimKey]] = {}
        for key in keys:
            self._by_domain.setdefault(key.domain, []).append(key)

    def keys_for(self, domain: str) -> Sequence[DkimKey]:
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            found = self._by_domain.get(".".join(labels[i:]))
            if found:
                return found
        return ()

    def sign(self, message: bytes, domain: str) -> bytes:
        """`message` with DKIM-Signature headers prepended (unchanged when no key matches)."""
        signatures = [_signature(message, key) for key in self.keys_for(domain)]
        return b"".join(signatures) + message


class _OpenSslRsaDKIM(dkim.DKIM):  # type: ignore[misc]
    """dkimpy with the RSA private-key operation done by OpenSSL (`cryptography`).

    dkimpy canonicalizes, hashes and builds the header; only its RSA step is replaced, since it
    is pure Python: ~7 ms per RSA-2048 signature on this hardware against ~0.3 ms in OpenSSL.
    dkimpy's Ed25519 branch signs through any object with `sign(digest).signature`, so the
    header digest is handed to an adapter around the OpenSSL key while that branch runs; the
    a= tag was fixed earlier from the real algorithm, and both use SHA-256 for the digest.
    """

    def __init__(self, message: bytes, key: rsa.RSAPrivateKey) -> None:
        super().__init__(message, signature_algorithm=b"rsa-sha256", linesep=b"\r\n")
        self._openssl_key = key

    def gen_header(self, fields: Any, include_headers: Any, canon_policy: Any,
                   header_name: bytes, pk: Any, standardize: bool = False) -> Any:  # fmt: skip
        self.signature_algorithm = b"ed25519-sha256"
        try:
            return super().gen_header(
                fields, include_headers, canon_policy, header_name,
                _DigestSigner(self._openssl_key), standardize,
            )  # fmt: skip
        finally:
            self.signature_algorithm = b"rsa-sha256"


@dataclass(frozen=True, slots=True)
class _Signed:
    signature: bytes


@dataclass(frozen=True, slots=True)
class _DigestSigner:
    key: rsa.RSAPrivateKey

    def sign(self, digest: bytes) -> _Signed:
        prehashed = utils.Prehashed(hashes.SHA256())
        return _Signed(self.key.sign(digest, padding.PKCS1v15(), prehashed))


def _signature(message: bytes, key: DkimKey) -> bytes:
    present = _present_headers(message)
    include = [h for h in SIGNED_HEADERS if h in present]
    include += [h for h in OVERSIGNED if h in present]
    options: dict[str, Any] = {
        "include_headers": [h.encode("ascii") for h in include],
        "canonicalize": (b"relaxed", b"relaxed"),
    }
    selector, domain = key.selector.encode("ascii"), key.domain.encode("ascii")
    if key.rsa_key is not None:
        sig = _OpenSslRsaDKIM(message, key.rsa_key).sign(
            selector, domain, key.private_key, **options
        )
    else:
        sig = dkim.sign(
            message, selector, domain, key.private_key,
            signature_algorithm=key.algorithm.encode("ascii"), **options,
        )  # fmt: skip
    return bytes(sig)


def _present_headers(message: bytes) -> set[str]:
    end = message.find(b"\r\n\r\n")
    block = message[: end if end != -1 else len(message)]
    names = set()
    for line in block.split(b"\r\n"):
        if line and line[:1] not in (b" ", b"\t"):
            name, sep, _ = line.partition(b":")
            if sep:
                names.add(name.strip().lower().decode("ascii", "replace"))
    return names


def load_signer(config: Config, base_dir: Path | None = None) -> DkimSigner | None:
    """The signer for config's [[dkim.keys]], or None when there are none. Relative key paths
    are taken from `base_dir` (default: the working directory)."""
    keys = [
        _load_key(i, k.domain, k.selector, k.key_file, k.algorithm, base_dir)
        for i, k in enumerate(config.dkim.keys)
    ]
    return DkimSigner(keys) if keys else None


def _load_key(
    i: int, domain: str, selector: str, key_file: str, algorithm: str, base_dir: Path | None
) -> DkimKey:
    where = f"dkim.keys[{i}].key_file"
    path = Path(key_file)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(where, f"cannot read {str(path)!r}: {e.strerror}") from None
    try:
        return make_key(domain, selector, algorithm, data)
    except (dkim.DKIMException, ValueError, TypeError) as e:
        raise ConfigError(where, f"{str(path)!r} is not a valid {algorithm} key: {e}") from None


def make_key(domain: str, selector: str, algorithm: str, private_key: bytes) -> DkimKey:
    """A signing key from a key file's contents, test-signed once; ValueError or
    dkim.DKIMException when the key is unusable."""
    pem = private_key.strip()
    rsa_key = None
    if algorithm == "rsa-sha256":
        loaded = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        rsa_key = loaded
    _signature(_PROBE, DkimKey("example.com", "probe", algorithm, pem, rsa_key))
    return DkimKey(domain.lower().rstrip("."), selector, algorithm, pem, rsa_key)


def generate_key(algorithm: str) -> tuple[bytes, str]:
    """A new private key in the form `load_signer` reads, and the DNS TXT value publishing
    its public half. rsa-sha256 keys are 2048-bit (RFC 8301); ed25519-sha256 per RFC 8463."""
    if algorithm == "rsa-sha256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"
    if algorithm == "ed25519-sha256":
        seed = nacl.signing.SigningKey.generate()
        raw_public = bytes(seed.verify_key)
        return (
            base64.b64encode(bytes(seed)) + b"\n",
            f"v=DKIM1; k=ed25519; p={base64.b64encode(raw_public).decode('ascii')}",
        )
    raise ValueError(f"unknown DKIM algorithm {algorithm!r}")


def txt_record(domain: str, selector: str, value: str) -> str:
    """A zone-file line for the key; the value is split into 255-octet strings (RFC 7208 §3.3
    style), which every DNS server and DKIM verifier joins back together."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)]
    quoted = " ".join(f'"{c}"' for c in chunks)
    return f"{selector}._domainkey.{domain.rstrip('.')}. IN TXT ( {quoted} )"
