"""LiteLLM's auth for the gateway: the master key, checked in constant time, and nothing else.

Named in litellm_config.yaml as `general_settings.custom_auth`. The wrapper is LiteLLM's only caller
and always presents the master key; LiteLLM's own key auth walks virtual keys, teams, budgets and
caches for every request (~1.7 ms of CPU per request measured on 1.108.5, a seventh of all it
spends), none of which this design uses. The guard's seal (custom_callbacks.guard) still decides
what a request may do: this only says who may knock.

The identity returned is the one LiteLLM gives the master key itself (proxy admin, the key's alias,
never the key), so logs and callbacks see the same caller as before. A wrong or missing key is a 401.
"""

from __future__ import annotations

import hmac
import os

from fastapi import HTTPException, Request
from litellm.constants import LITELLM_PROXY_ADMIN_NAME, LITELLM_PROXY_MASTER_KEY_ALIAS
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

MASTER_KEY_ENV = "LITELLM_MASTER_KEY"


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    master_key = os.environ.get(MASTER_KEY_ENV, "")
    presented = (api_key or "").removeprefix("Bearer ").strip()
    if not master_key or not hmac.compare_digest(presented.encode(), master_key.encode()):
        raise HTTPException(status_code=401, detail="Authentication Error: invalid key.")
    # A new object per request: LiteLLM annotates it (route, span) as the request goes on.
    return UserAPIKeyAuth(api_key=LITELLM_PROXY_MASTER_KEY_ALIAS, user_role=LitellmUserRoles.PROXY_ADMIN,
                          user_id=LITELLM_PROXY_ADMIN_NAME)
