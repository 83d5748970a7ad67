"""PII protection: find personal data and secrets before anything leaves (the step), restore pseudonyms in answers."""

from wrapper.pii.restore import Restorer
from wrapper.pii.scanner import PiiScanner
from wrapper.pii.step import PiiStep

__all__ = ["PiiScanner", "PiiStep", "Restorer"]
