"""Settings of the eval package."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
