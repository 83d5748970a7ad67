"""PII protection: find personal data and secrets before anything leaves, restore pseudonyms in answers."""

from wrapper.pii.redact import protect
from wrapper.pii.restore import Restorer, StreamRestorer
from wrapper.pii.scanner import PiiScanner

__all__ = ["PiiScanner", "Restorer", "StreamRestorer", "protect"]
