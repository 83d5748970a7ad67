"""Which model LiteLLM will serve a request with, and whether the tenant may use it.

The catalog is read from litellm_config.yaml, the file LiteLLM itself serves:
model names, aliases (`router_settings.model_group_alias`,
`litellm_settings.model_alias_map`) and wildcard routes (a model_name with `*`).
A request's model must resolve to one of them, and what it resolves to must be
in the tenant's allow-list; the wrapper then asks LiteLLM for that resolved
name, so LiteLLM has nothing left to interpret. Anything else (a deployment's
provider/model string, a deployment id, "a,b", a name LiteLLM would pass to a
provider with the platform's keys) is refused before LiteLLM sees it.

A deployment's `model_info.gateway_tier` (e.g. `cheap`, `frontier`) puts its model group in that tier, for
`model: auto` (wrapper/routing/tiers.py).

A tenant's `"*"` means every name and alias in the catalog, never a wildcard
route: a tenant reaches `openai/*` only when its allow-list names that route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import yaml

from wrapper.config import Tenant
from wrapper.errors import GatewayError


@dataclass(frozen=True)
class ModelCatalog:
    names: frozenset[str]  # model groups served as named
    aliases: dict[str, str]  # alias -> model group
    wildcards: tuple[tuple[str, re.Pattern], ...] = ()  # (model_name with *, what it matches)
    tiers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tier -> model groups (model_info.gateway_tier)

    @classmethod
    def from_litellm_config(cls, path: Path) -> ModelCatalog:
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RuntimeError(f"cannot read the LiteLLM config {path}: {exc}") from None
        names: set[str] = set()
        wildcards = []
        tiers: dict[str, list[str]] = {}
        for deployment in config.get("model_list") or ():
            name = deployment.get("model_name") if isinstance(deployment, dict) else None
            if not isinstance(name, str):
                continue
            tier = (deployment.get("model_info") or {}).get("gateway_tier")  # LiteLLM reads `tier` itself
            if isinstance(tier, str) and "*" not in name and name not in tiers.get(tier, ()):
                tiers.setdefault(tier, []).append(name)
            if "*" in name:
                wildcards.append((name, re.compile(".*".join(map(re.escape, name.split("*"))))))
            else:
                names.add(name)
        router = config.get("router_settings") or {}
        names.update(group.get("group_name") for group in router.get("routing_groups") or ()
                     if isinstance(group, dict) and isinstance(group.get("group_name"), str))
        aliases = {}
        for source in ((config.get("litellm_settings") or {}).get("model_alias_map") or {},
                       router.get("model_group_alias") or {}):
            for alias, target in source.items():
                target = target.get("model") if isinstance(target, dict) else target
                if isinstance(alias, str) and isinstance(target, str):
                    aliases[alias] = target
        return cls(frozenset(names), aliases, tuple(wildcards), {tier: tuple(groups) for tier, groups in tiers.items()})

    def some_model(self) -> str | None:
        """A model group to warm LiteLLM up with (None when the catalog has none)."""
        return min(self.names) if self.names else None

    def resolve(self, model: str) -> str | None:
        """The model group (or wildcard route) LiteLLM would serve `model` with; None when it serves none."""
        target = self._unalias(model)
        if target in self.names:
            return target
        for route, pattern in self.wildcards:
            if pattern.fullmatch(model):
                return route
        return None

    def allowed(self, tenant: Tenant, model: str) -> bool:
        target = self.resolve(model)
        if target is None:
            return False
        if "*" in tenant.models and target in self.names:
            return True
        return any(self._unalias(entry) == target for entry in tenant.models)

    def _unalias(self, name: str) -> str:
        # LiteLLM applies model_alias_map, then its router the group alias of the result: at most two hops.
        once = self.aliases.get(name, name)
        return self.aliases.get(once, once)

    def route(self, tenant: Tenant, model: str) -> str:
        """Step 5: the name to ask LiteLLM for (aliases resolved; a wildcard route's match as sent), or 403/404."""
        target = self.resolve(model)
        if target is None:
            raise GatewayError(404, f"The model '{model}' does not exist.", code="model_not_found", param="model")
        if not self.allowed(tenant, model):
            raise GatewayError(403, f"Model '{model}' is not available to this tenant.", code="model_not_allowed",
                               param="model")
        return target if target in self.names else model

    def listing_for(self, litellm_listing: bytes, tenant: Tenant) -> bytes:
        """LiteLLM's /v1/models answer, narrowed to what the tenant may call."""
        listing = orjson.loads(litellm_listing)
        listing["data"] = [m for m in listing.get("data", [])
                           if isinstance(m, dict) and isinstance(m.get("id"), str) and self.allowed(tenant, m["id"])]
        return orjson.dumps(listing)
