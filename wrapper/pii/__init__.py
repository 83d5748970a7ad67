"""PII protection: find personal data and secrets before anything leaves, restore pseudonyms in answers."""

from wrapper.pii.restore import Restorer, StreamRestorer
from wrapper.pii.scanner import PiiScanner

__all__ = ["PiiScanner", "Restorer", "StreamRestorer", "protect"]


async def protect(ctx, body, scanner):
    """See wrapper.pii.redact.protect (imported late: it needs the request context, which needs streaming)."""
    from wrapper.pii.redact import protect as _protect

    return await _protect(ctx, body, scanner)
