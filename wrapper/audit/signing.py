"""Ed25519 signatures over chain checkpoints.

A checkpoint (tenant, seq, head hash, time) signed with a key the database never
sees means even a database superuser who rewrites the chain consistently,
recomputing every hash, is caught: the signed head no longer matches.
The key is GATEWAY_AUDIT_SIGNING_KEY (base64 of a 32-byte Ed25519 seed); the
embedded default generates one under ./var. Verifiers need only the public key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from wrapper.settings import Settings


def checkpoint_message(tenant: str, seq: int, head_hash: str, created_at: str) -> bytes:
    return f"gateway-audit-checkpoint\n{tenant}\n{seq}\n{head_hash}\n{created_at}".encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_seed(cls, seed_b64: str) -> Signer:
        seed = base64.b64decode(seed_b64)
        if len(seed) != 32:
            raise ValueError("GATEWAY_AUDIT_SIGNING_KEY must be base64 of 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load_or_create(cls, env_value: str | None, key_file: Path) -> Signer:
        """The configured key; else the one kept in key_file, made on first use (mode 0600)."""
        if env_value:
            return cls.from_seed(env_value)
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.b64encode(os.urandom(32)).decode())
        return cls.from_seed(key_file.read_text().strip())

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private.sign(message)).decode()

    def derived_key(self, purpose: str) -> bytes:
        """A secret for another use (sealing response ids), kept and shared as this key is: every replica and
        every restart derives the same one, and nothing can be learnt of the signing key from it."""
        seed = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return hmac.new(seed, purpose.encode(), hashlib.sha256).digest()


def gateway_signer(settings: Settings) -> Signer:
    """The gateway's key: GATEWAY_AUDIT_SIGNING_KEY, else the one kept in the var dir."""
    return Signer.load_or_create(settings.audit_signing_key, settings.var_dir / "audit-signing.key")


def signature_valid(public_key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature), message)
        return True
    except (InvalidSignature, ValueError):
        return False
