"""The cost ledger's sums on both databases (PostgreSQL and the embedded SQLite default)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.audit_db import record
from wrapper.audit.costs import spend

DAY = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)


async def test_spend_sums_per_group_and_period_and_leaves_out_what_is_not_a_model_call(store):
    await store.append([
        record("acme", 1, occurred_at=DAY, user="ann", cost=0.25, tokens_in=10, tokens_out=5),
        record("acme", 2, occurred_at=DAY + timedelta(hours=2), user="ann", cost=0.5, tokens_in=20, tokens_out=5),
        record("acme", 3, occurred_at=DAY + timedelta(hours=3), user="bob", cost=1.0, tokens_in=1, tokens_out=1),
        record("acme", 4, occurred_at=DAY, model=None, cost=None, tokens_in=None, tokens_out=None),  # an audit read
        record("globex", 1, occurred_at=DAY, cost=2.0),
    ])
    by_user_day = await spend(store.engine, ["acme"], ["user"], "day", None, None)
    assert [(r["user"], r["period"], r["requests"], r["tokens_in"], r["cost"]) for r in by_user_day] == [
        ("ann", "2026-03-01", 1, 10, pytest.approx(0.25)), ("ann", "2026-03-02", 1, 20, pytest.approx(0.5)),
        ("bob", "2026-03-02", 1, 1, pytest.approx(1.0))]
    by_tenant = await spend(store.engine, None, ["tenant"], None, DAY, DAY + timedelta(hours=1))
    assert [(r["tenant"], r["requests"], r["cost"]) for r in by_tenant] == [("acme", 1, pytest.approx(0.25)),
                                                                           ("globex", 1, pytest.approx(2.0))]
    assert await spend(store.engine, [], ["tenant"], None, None, None) == []
