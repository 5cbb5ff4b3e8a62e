"""Prometheus metrics, in a registry of the app's own (two apps in one process never clash).

Labels naming a domain, model or adapter take only names the server knows (see
`ServerContext.model_label`); any other name a client sends counts under `OTHER_LABEL`,
so that clients cannot grow the label set (and the scrape) without bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OTHER_LABEL = "other"

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "lorag_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.chat_requests = Counter(
            "lorag_chat_requests",
            "Chat completions by model (domain, adapter or base) and status",
            ["model", "status"],
            registry=r,
        )
        self.chat_latency = Histogram(
            "lorag_chat_latency_seconds",
            "Chat completion latency, end to end",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "lorag_chat_time_to_first_token_seconds",
            "Time to the first streamed token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "lorag_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "lorag_completion_tokens", "Completion tokens generated", ["model"], registry=r
        )
        self.retrieval_seconds = Histogram(
            "lorag_retrieval_seconds",
            "Time to retrieve context for a request or search",
            ["domain"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "lorag_chat_in_flight", "Chat completions being generated", registry=r
        )
        self.adapter_loads = Counter(
            "lorag_adapter_loads",
            "Adapter versions loaded into the engine",
            ["adapter"],
            registry=r,
        )
        self.adapter_load_seconds = Histogram(
            "lorag_adapter_load_seconds",
            "Time to load an adapter version into the engine",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.adapter_slot_wait_seconds = Histogram(
            "lorag_adapter_slot_wait_seconds",
            "Time a load waited for a replaced version to drain and free an engine slot "
            "(above zero: raise serving.engine.max_adapters)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.adapter_swaps = Counter(
            "lorag_adapter_swaps",
            "Adapter replacements (a new version took over a name)",
            ["adapter"],
            registry=r,
        )
        self.adapter_unloads = Counter(
            "lorag_adapter_unloads",
            "Adapter versions removed from the engine",
            ["adapter"],
            registry=r,
        )
        self.adapters_loaded = Gauge(
            "lorag_adapters_loaded", "Adapter versions registered in the engine", registry=r
        )
        self.reindex_jobs = Counter(
            "lorag_reindex_jobs", "Re-index jobs by final status", ["status"], registry=r
        )
        self.feedback = Counter(
            "lorag_feedback",
            "Feedback events on responses, by rating ('none': a correction without a rating)",
            ["rating"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
