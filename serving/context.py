"""What one running server holds: created by the app's lifespan, torn down with it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.prompt import PromptLayout, prompt_format
from retrieval.settings import RetrievalSettings
from serving.adapters import AdapterRegistry
from serving.documents import DocumentStore
from serving.engine.base import Engine
from serving.jobs import JobManager
from serving.metrics import OTHER_LABEL, Metrics
from serving.search import SearchService
from serving.settings import BASE_ALIAS, ServingSettings
from serving.state import ServingState, StateStore


@dataclass
class ServerContext:
    settings: ServingSettings
    retrieval_settings: RetrievalSettings
    model_path: Path
    base_model_id: str
    base_fingerprint: str
    max_model_len: int
    engine: Engine
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    metrics: Metrics
    registry: AdapterRegistry
    search: SearchService
    store: StateStore
    documents: DocumentStore
    jobs: JobManager
    state: ServingState  # the store's content as this replica last read or wrote it
    layout: PromptLayout = "chat"  # how prompts are laid out (retrieval.prompt)

    @property
    def prompt_format(self) -> str:
        return prompt_format(self.layout)

    def is_base(self, model: str) -> bool:
        return model in (BASE_ALIAS, self.base_model_id)

    def domain_label(self, name: str) -> str:
        """`name` as a metric label: a domain of the state, else OTHER_LABEL (bounded)."""
        return name if name in self.state.domains else OTHER_LABEL

    def model_label(self, model: str) -> str:
        """`model` as a metric label: `base` for the base model (either name), a domain or
        a loaded adapter as is, anything else OTHER_LABEL (bounded)."""
        if self.is_base(model):
            return BASE_ALIAS
        if model in self.state.domains or self.registry.current(model) is not None:
            return model
        return OTHER_LABEL
