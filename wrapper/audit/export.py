"""A verifiable NDJSON export of one tenant's chain, and its verifier.

An export is a contiguous run of the chain, so anyone holding it and the
gateway's public key can recompute every hash without the database. Lines, in
order, each canonical JSON (wrapper.audit.chain.canonical) ending in "\\n":

  {"tenant", "seq", "prev_hash", "row_hash", "record": "<canonical record text, exactly as hashed>"}
  {"checkpoint": {"tenant", "seq", "head_hash", "created_at", "key_id", "signature"}}   (inside the run)
  {"manifest": {"format", "tenant", "since", "until", "first_seq", "last_seq", "count",
                "first_prev_hash", "last_row_hash", "lines_sha256", "exported_at",
                "key_id", "public_key", "signature"}}

row_hash = sha256("{tenant}\\n{seq}\\n{prev_hash}\\n{record}"); a checkpoint's signature
covers "gateway-audit-checkpoint\\n{tenant}\\n{seq}\\n{head_hash}\\n{created_at}";
lines_sha256 is SHA-256 over the bytes of every line before the manifest, newlines
included; the manifest's signature is Ed25519 over the UTF-8 of
canonical(manifest without "signature"), and public_key is base64 of the raw key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wrapper.audit.chain import GENESIS, canonical, row_hash
from wrapper.audit.query import in_utc
from wrapper.audit.schema import audit_checkpoints, audit_events
from wrapper.audit.signing import Signer, checkpoint_message, key_id, signature_valid

FORMAT = "gateway-audit-export/1"


def check_window(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """The bounds in UTC; ValueError when one has no time zone or they are the wrong way round."""
    since = in_utc(since, "since") if since is not None else None
    until = in_utc(until, "until") if until is not None else None
    if since is not None and until is not None and since > until:
        raise ValueError("since must not be later than until")
    return since, until


async def export_lines(engine: AsyncEngine, tenant: str, since: datetime | None, until: datetime | None,
                       signer: Signer) -> AsyncIterator[bytes]:
    """The export's lines, streamed from a server-side cursor (bounded memory, one snapshot on PostgreSQL)."""
    since, until = check_window(since, until)
    digest = hashlib.sha256()

    def line_of(item: dict) -> bytes:
        line = (canonical(item) + "\n").encode()
        digest.update(line)
        return line

    count, first_prev_hash, last_row_hash = 0, None, None
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # the range, rows and checkpoints from one snapshot
            await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        first_seq, last_seq = await _seq_range(conn, tenant, since, until)
        if first_seq is not None:
            in_range = (audit_events.c.tenant == tenant) & audit_events.c.seq.between(first_seq, last_seq)
            rows = await conn.stream(select(audit_events.c.seq, audit_events.c.prev_hash, audit_events.c.row_hash,
                                            audit_events.c.record).where(in_range).order_by(audit_events.c.seq))
            async for row in rows:
                first_prev_hash = first_prev_hash or row.prev_hash
                count, last_row_hash = count + 1, row.row_hash
                yield line_of({"tenant": tenant, "seq": row.seq, "prev_hash": row.prev_hash,
                               "row_hash": row.row_hash, "record": row.record})
            checkpoints = await conn.stream(
                select(audit_checkpoints).where(audit_checkpoints.c.tenant == tenant,
                                                audit_checkpoints.c.seq.between(first_seq, last_seq))
                .order_by(audit_checkpoints.c.seq))
            async for c in checkpoints:
                yield line_of({"checkpoint": {"tenant": c.tenant, "seq": c.seq, "head_hash": c.head_hash,
                                              "created_at": c.created_at, "key_id": c.key_id,
                                              "signature": c.signature}})
    manifest = {
        "format": FORMAT, "tenant": tenant,
        "since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
        "first_seq": first_seq, "last_seq": last_seq, "count": count,
        "first_prev_hash": first_prev_hash, "last_row_hash": last_row_hash,
        "lines_sha256": digest.hexdigest(), "exported_at": datetime.now(UTC).isoformat(),
        "key_id": signer.key_id, "public_key": raw_public_key(signer.public_key),
    }
    manifest["signature"] = signer.sign(manifest_message(manifest))
    yield (canonical({"manifest": manifest}) + "\n").encode()


async def _seq_range(conn: AsyncConnection, tenant: str, since, until) -> tuple[int | None, int | None]:
    """First seq at or after since, last seq before until: the run between them is exported whole."""
    first = select(func.min(audit_events.c.seq)).where(audit_events.c.tenant == tenant)
    last = select(func.max(audit_events.c.seq)).where(audit_events.c.tenant == tenant)
    if since is not None:
        first = first.where(audit_events.c.occurred_at >= since)
    if until is not None:
        last = last.where(audit_events.c.occurred_at < until)
    first_seq, last_seq = (await conn.execute(first)).scalar(), (await conn.execute(last)).scalar()
    if first_seq is None or last_seq is None or first_seq > last_seq:
        return None, None
    return first_seq, last_seq


def manifest_message(manifest: dict) -> bytes:
    """What the manifest's signature covers: its canonical JSON without the signature field."""
    return canonical({k: v for k, v in manifest.items() if k != "signature"}).encode()


def raw_public_key(public_key: Ed25519PublicKey) -> str:
    return base64.b64encode(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def verify_export(lines: Iterable[bytes],
                  public_key: Ed25519PublicKey | dict[str, Ed25519PublicKey]) -> tuple[bool, str]:
    """Check an export against the trusted key(s) (one key, or key_id -> key); (ok, what is wrong or what was checked)."""
    keys = public_key if isinstance(public_key, dict) else {key_id(public_key): public_key}
    digest = hashlib.sha256()
    hashes: list[str] = []  # row_hash of each exported record, in seq order (checkpoints are checked against them)
    first: dict | None = None
    checkpoints = 0
    manifest = None
    for number, line in enumerate(lines, 1):
        if manifest is not None:
            return False, f"line {number} follows the manifest"
        line = line if line.endswith(b"\n") else line + b"\n"
        try:
            item = json.loads(line)
            if "manifest" in item:
                manifest = item["manifest"]
                continue
            digest.update(line)
            if "checkpoint" in item:
                problem = _checkpoint_problem(item["checkpoint"], first, hashes, keys)
                checkpoints += 1
            elif checkpoints:
                problem = f"line {number}: a record after the checkpoints"
            else:
                first = first or item
                problem = _row_problem(item, first, hashes)
                hashes.append(item["row_hash"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return False, f"line {number} is malformed ({type(exc).__name__}: {exc})"
        if problem:
            return False, problem
    if manifest is None:
        return False, "the export has no manifest (cut short?)"
    try:
        problem = _manifest_problem(manifest, first, hashes, digest.hexdigest(), keys)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return False, f"the manifest is malformed ({type(exc).__name__}: {exc})"
    if problem:
        return False, problem
    span = f"seq {manifest['first_seq']}..{manifest['last_seq']}" if hashes else "no records"
    return True, f"intact: {len(hashes)} records of {manifest['tenant']} ({span}), {checkpoints} checkpoints"


def _row_problem(row: dict, first: dict, hashes: list[str]) -> str | None:
    seq, expected = row["seq"], first["seq"] + len(hashes)
    if row["tenant"] != first["tenant"]:
        return f"seq {seq}: tenant {row['tenant']!r} in an export of {first['tenant']!r}"
    if seq != expected:
        return f"record {expected} is missing" if seq > expected else f"seq {seq} is out of order (expected {expected})"
    if hashes and row["prev_hash"] != hashes[-1]:
        return f"seq {seq}: prev_hash does not link to the record before"
    if row_hash(row["tenant"], seq, row["prev_hash"], row["record"]) != row["row_hash"]:
        return f"seq {seq}: the record does not match its hash"
    return None


def _checkpoint_problem(c: dict, first: dict | None, hashes: list[str], keys: dict) -> str | None:
    seq = c["seq"]
    if first is None or not first["seq"] <= seq < first["seq"] + len(hashes):
        return f"checkpoint {seq} is outside the exported records"
    if c["tenant"] != first["tenant"]:
        return f"checkpoint {seq} is of tenant {c['tenant']!r}"
    key = keys.get(c["key_id"])
    if key is None:
        return f"checkpoint {seq} is signed by unknown key {c['key_id']}"
    if not signature_valid(key, checkpoint_message(c["tenant"], seq, c["head_hash"], c["created_at"]), c["signature"]):
        return f"checkpoint {seq} has an invalid signature"
    if hashes[seq - first["seq"]] != c["head_hash"]:
        return f"seq {seq}: the record's hash differs from the head signed by checkpoint {seq}"
    return None


def _manifest_problem(m: dict, first: dict | None, hashes: list[str], lines_sha256: str, keys: dict) -> str | None:
    key = keys.get(m["key_id"])
    if key is None:
        return f"the manifest is signed by unknown key {m['key_id']}"
    if m["public_key"] != raw_public_key(key):
        return "the manifest's public_key is not the trusted key"
    if not signature_valid(key, manifest_message(m), m["signature"]):
        return "the manifest's signature is invalid (the manifest was changed)"
    if m["lines_sha256"] != lines_sha256:
        return "lines_sha256 does not match the lines before the manifest (a line was added, dropped or changed)"
    if m["count"] != len(hashes):
        return f"the manifest counts {m['count']} records, the export holds {len(hashes)}"
    if not hashes:
        return None if m["first_seq"] is None and m["last_seq"] is None else "the manifest names records the export lacks"
    if first["tenant"] != m["tenant"]:
        return f"the records are of tenant {first['tenant']!r}, the manifest says {m['tenant']!r}"
    if (m["first_seq"], m["last_seq"]) != (first["seq"], first["seq"] + len(hashes) - 1):
        return f"the manifest's range {m['first_seq']}..{m['last_seq']} differs from the records'"
    if m["first_prev_hash"] != first["prev_hash"]:
        return f"seq {first['seq']}: prev_hash differs from the manifest's first_prev_hash"
    if m["first_seq"] == 1 and m["first_prev_hash"] != GENESIS:
        return "seq 1: prev_hash is not the genesis hash"
    if m["last_row_hash"] != hashes[-1]:
        return f"seq {m['last_seq']}: row_hash differs from the manifest's last_row_hash"
    return None
