"""Test identities: API keys made with the real CLI, and an OIDC provider's JWKS served on loopback."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.processes import BIN, ROOT, free_port

ISSUER = "https://idp.example.test/"
AUDIENCE = "llm-gateway"


def gateway_cli(config: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run the `gateway` CLI on a config file; returns its last line of output (the key, for keys create)."""
    done = subprocess.run([str(BIN / "gateway"), "--config", str(config), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


class IdentityProvider:
    """Signs tokens and serves its public keys as a JWKS (GET /jwks) on loopback."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rotated_published = False
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                provider.fetches += 1
                body = json.dumps(provider.jwks()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def jwks(self) -> dict:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        keys = [{**rsa_jwk, "kid": "rsa-1", "use": "sig"}, {**ec_jwk, "kid": "ec-1", "use": "sig"}]
        if self.rotated_published:
            keys.append({**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rotated.public_key())), "kid": "rsa-2"})
        return {"keys": keys}

    def publish_rotated_key(self) -> None:
        self.rotated_published = True

    def token(self, tenant: str, user: str, *, roles=("app",), algorithm="RS256", kid=None, lifetime=300, **overrides) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": user, "tenant": tenant, "roles": list(roles) if isinstance(roles, tuple) else roles,
                  "iat": now, "exp": now + lifetime, **overrides}
        key, default_kid = {"RS256": (self.rsa, "rsa-1"), "ES256": (self.ec, "ec-1")}[algorithm]
        if kid == "rsa-2":
            key = self.rotated
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid or default_kid})

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def close(self) -> None:
        self.server.shutdown()


def unsigned_token(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'rsa-1'})}.{part(claims)}."
