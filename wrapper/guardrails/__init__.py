"""Guardrails: input and output checks per endpoint (step 3 of the flow, and its response half).

Domain guardrails are plain Python, loaded by import path from gateway.yaml:

    guardrails:
      mode: enforce
      output:
        - check: python
          name: refund_limit                  # the error code and the audit record's name
          path: "my_company.guards:RefundLimit"   # module:Class, importable by the wrapper
          options: {max_usd: 100}             # the class's keyword arguments
          action: block                       # or redact (masks what it found), annotate

The class (see wrapper/guardrails/examples/refund_limit.py) has any of:
- `check_input(texts: list[str]) -> list[tuple[int, Finding]]`: the request's texts; (text index, finding) for each
  problem. May be async (`async def`): it runs before the request is forwarded.
- `check_output_chunk(text: str) -> list[Finding]`: the part of a streamed text not yet released, with up to
  `hold` characters before it; called as each piece comes, on the event loop, so it must be fast and sync.
  A finding that reaches the end of `text` waits for the next piece (it may still grow).
- `check_output_end(text: str) -> list[Finding]`: one text of the answer (a choice's content), whole. Sync.
- `hold: int`: how many characters of a stream its chunk check needs to see at once (at most 256).
`Finding(start, end, type)`: character offsets in the text it was given and a short type for the record (never
the matched text: the audit record keeps type and position only).
"""

from wrapper.guardrails.checks import Finding

__all__ = ["Finding"]
