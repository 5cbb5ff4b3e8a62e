"""Settings of the training package."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class TrainingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
