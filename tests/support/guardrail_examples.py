"""A domain guardrail for the in-process tests: an async input check (as one calling a service would be)."""

from __future__ import annotations

import asyncio

from wrapper.guardrails import Finding


class NoTicketNumbersToVendors:
    """Refuses a request that sends an internal ticket number (INC-123456) to the model."""

    async def check_input(self, texts: list[str]) -> list[tuple[int, Finding]]:
        await asyncio.sleep(0)  # as a check that asks a service would
        found = []
        for index, text in enumerate(texts):
            at = text.find("INC-")
            if at >= 0 and text[at + 4:at + 10].isdigit():
                found.append((index, Finding(at, at + 10, "ticket_number")))
        return found
