"""Fixtures for every tier, registered as plugins (tests import helpers and constants, never fixtures, by name).

tests/unit: in process (the app itself, driven through ASGI in front of the fake provider), fast.
tests/store: the audit store on real PostgreSQL and SQLite; deploy files.
tests/stack: real processes (`gateway up`: LiteLLM and the wrapper) in front of the fake provider.
"""

pytest_plugins = ["tests.support.audit_db", "tests.support.stack", "tests.support.inprocess"]
