"""Who is calling: API keys and org SSO tokens, resolved once per request to a Principal."""

from wrapper.auth.principal import AuthError, Principal, authenticate

__all__ = ["AuthError", "Principal", "authenticate"]
