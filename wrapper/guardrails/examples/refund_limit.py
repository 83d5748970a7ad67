"""An example domain guardrail: never let the model promise a refund above the policy's limit.

A support assistant may say "we will refund $40", not "we will refund $4,000". The rule reads amounts next to
refund words in the answer as it streams, so a promise above `max_usd` is stopped before it reaches the customer.
(A customer may ask for any amount: the request is not checked.)

    - check: python
      name: refund_limit
      path: "wrapper.guardrails.examples.refund_limit:RefundLimit"
      options: {max_usd: 100}
"""

from __future__ import annotations

import re

from wrapper.guardrails import Finding

# An amount has a currency, before or after it: "$150", "USD 1,200.50", "300 dollars" (never "order 48213").
_NUMBER = r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?"
_AMOUNT = rf"(?:(?:\$|usd|eur|€)\s?{_NUMBER}|{_NUMBER}\s?(?:dollars|usd|euros?)\b)"
_PROMISE = re.compile(rf"(?i)\b(?:refund(?:ed|ing)?|reimburs(?:e|ed|ing|ement)|credit(?:ed)?)\b[^.!?\n]{{0,40}}?{_AMOUNT}"
                      rf"|{_AMOUNT}\s+(?:refund|reimbursement|credit)\b")


class RefundLimit:
    hold = 80  # a refund word, up to 40 characters, and an amount

    def __init__(self, max_usd: float = 100.0) -> None:
        self.max_usd = float(max_usd)

    def _over(self, text: str) -> list[Finding]:
        found = []
        for match in _PROMISE.finditer(text):
            amount = next((group for group in match.groups() if group), None)
            if amount and float(amount.replace(",", "")) > self.max_usd:
                found.append(Finding(match.start(), match.end(), "refund_over_limit"))
        return found

    def check_output_chunk(self, text: str) -> list[Finding]:
        return self._over(text)

    def check_output_end(self, text: str) -> list[Finding]:
        return []  # every promise is caught as it streams
