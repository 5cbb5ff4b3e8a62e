"""Which domain, adapter and index serve a request: `model` (a domain, an adapter or the
base model) resolved with the request's `lorag` switches, checked against the limits."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.settings import SearchMode
from serving.context import ServerContext
from serving.errors import bad_request, conflict, not_found
from serving.protocol import LoragOptions
from serving.state import DomainRecord


@dataclass
class Route:
    """What serves a request: a domain's setup with the request's switches applied."""

    domain: DomainRecord | None
    adapter: str | None
    retrieval: bool
    k: int
    mode: SearchMode


def resolve_route(ctx: ServerContext, model: str, options: LoragOptions | None) -> Route:
    """Resolve `model` (a domain, an adapter or the base model) with the switches."""
    opts = options or LoragOptions()
    retrieval_defaults = ctx.retrieval_settings
    domain = ctx.state.domains.get(model)
    if domain is not None:
        if opts.adapter and not domain.adapter:
            raise bad_request(
                f"domain {model!r} has no adapter", param="lorag.adapter", code="no_adapter"
            )
        if opts.retrieval and not domain.index:
            raise bad_request(
                f"domain {model!r} has no index", param="lorag.retrieval", code="no_index"
            )
        route = Route(
            domain=domain,
            adapter=domain.adapter if opts.adapter is not False else None,
            retrieval=domain.index if opts.retrieval is None else opts.retrieval,
            k=opts.k or domain.k or retrieval_defaults.k,
            mode=opts.mode or domain.mode or retrieval_defaults.mode,
        )
    elif ctx.registry.current(model) is not None or ctx.is_base(model):
        if opts.retrieval:
            raise bad_request(
                f"{model!r} is not a domain, so it has no index; name a domain to retrieve",
                param="lorag.retrieval",
                code="no_index",
            )
        is_adapter = not ctx.is_base(model)
        if opts.adapter and not is_adapter:
            raise bad_request(
                "the base model has no adapter", param="lorag.adapter", code="no_adapter"
            )
        route = Route(
            domain=None,
            adapter=model if is_adapter and opts.adapter is not False else None,
            retrieval=False,
            k=retrieval_defaults.k,
            mode=retrieval_defaults.mode,
        )
    else:
        raise not_found(
            f"the model {model!r} does not exist; GET /v1/models lists the domains, "
            "adapters and base model served here",
            param="model",
            code="model_not_found",
        )
    if route.k > ctx.settings.limits.max_k:
        raise bad_request(
            f"k is {route.k}, over the limit of {ctx.settings.limits.max_k}", param="lorag.k"
        )
    if route.adapter is not None and ctx.registry.current(route.adapter) is None:
        raise conflict(
            f"adapter {route.adapter!r} of domain {model!r} is not loaded; load it with "
            "POST /admin/adapters",
            param="model",
            code="adapter_not_loaded",
        )
    return route
