"""What every policy model shares: strict, frozen models, and the mode of a pipeline step."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mode(StrEnum):
    """How a step of the pipeline applies its policy (wrapper/pipeline.py)."""

    off = "off"  # not run
    shadow = "shadow"  # run on a copy: what it would have done is recorded, nothing the client sees changes
    enforce = "enforce"  # run: it may refuse, rewrite the request and change the answer
