"""Settings of the serving package."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
