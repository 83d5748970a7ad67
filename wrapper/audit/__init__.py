"""The audit log: one record per request, in a per-tenant hash chain the database keeps append-only."""
