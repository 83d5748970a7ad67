"""Org SSO: OIDC JWTs from the organisation's identity provider.

Tokens are checked against the provider's JWKS (cached; refetched when a token
names an unknown `kid`, at most once per `jwks_refresh_min_seconds`), issuer,
audience and expiry with a small leeway. Only the configured asymmetric
algorithms are accepted, so `alg: none` and HS256-signed-with-the-public-key
tokens never reach a signature check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import jwt

from wrapper.config import Oidc

logger = logging.getLogger("wrapper.auth.oidc")


class TokenInvalid(Exception):
    """Why a token was refused; for the logs, never for the client."""


class JwksCache:
    def __init__(self) -> None:
        self._keys: dict[str, jwt.PyJWK] = {}
        self._url: str | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def key_for(self, oidc: Oidc, kid: str | None) -> jwt.PyJWK | None:
        if self._url != oidc.jwks_url:  # the config changed the provider: forget the old keys
            self._keys, self._url, self._fetched_at = {}, oidc.jwks_url, 0.0
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at >= oidc.jwks_refresh_min_seconds:
                await self._fetch(oidc.jwks_url)
        return self._keys.get(kid)

    async def _fetch(self, url: str) -> None:
        self._fetched_at = time.monotonic()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                async with session.get(url) as response:
                    response.raise_for_status()
                    document = json.loads(await response.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            logger.warning("could not fetch the JWKS: %s", type(exc).__name__)
            return
        keys = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError):
                continue  # a key type or algorithm we do not use
            if key.key_id:
                keys[key.key_id] = key
        self._keys = keys


async def verify_token(token: str, oidc: Oidc, jwks: JwksCache) -> dict:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid(f"malformed header: {type(exc).__name__}") from None
    algorithm = header.get("alg")
    if algorithm not in oidc.algorithms:
        raise TokenInvalid(f"algorithm {algorithm!r} is not accepted")
    key = await jwks.key_for(oidc, header.get("kid"))
    if key is None:
        raise TokenInvalid("unknown kid")
    try:
        return jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            audience=oidc.audience,
            issuer=oidc.issuer,
            leeway=oidc.leeway_seconds,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid(type(exc).__name__) from None
