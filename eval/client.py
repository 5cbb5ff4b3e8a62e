"""Talking to a lorag server (or any OpenAI-compatible endpoint) with the official client."""

from __future__ import annotations

from typing import Any

import openai
from openai import AsyncOpenAI


def api_base(url: str) -> str:
    """The OpenAI base URL (ending in `/v1`) for a server URL given with or without it."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"server URL {url!r} must start with http:// or https://")
    return url if url.endswith("/v1") else f"{url}/v1"


def server_root(url: str) -> str:
    """The server's root URL (for `/admin/...` and `/health`), without a trailing `/v1`."""
    base = api_base(url)
    return base.removesuffix("/v1")


def make_client(url: str, api_key: str | None, timeout_s: float) -> AsyncOpenAI:
    """An async client that never retries on its own, so every failure is counted."""
    return AsyncOpenAI(
        base_url=api_base(url), api_key=api_key or "none", timeout=timeout_s, max_retries=0
    )


async def check_model(client: AsyncOpenAI, model: str) -> dict[str, Any]:
    """Fail early, with a clear message, when the server is unreachable or lacks `model`.

    Returns the model's lorag metadata (`kind`, `adapter`, `index`, ...; empty from servers
    that are not lorag). A model may be named by its id or by one of its lorag aliases.
    """
    try:
        page = await client.models.list()
    except openai.APIConnectionError as err:
        raise ConnectionError(
            f"cannot reach the server at {client.base_url}: {err}; is `lorag serve` running?"
        ) from err
    except openai.AuthenticationError as err:
        raise PermissionError(
            f"{client.base_url}: the server refused the API key (pass --api-key)"
        ) from err
    except openai.APIStatusError as err:
        raise RuntimeError(f"{client.base_url}/models: HTTP {err.status_code}: {err}") from err
    names = []
    for entry in page.data:
        meta = extension(entry, "lorag") or {}
        if model == entry.id or model in (meta.get("aliases") or []):
            return dict(meta)
        names.append(entry.id)
    raise ValueError(
        f"the server at {client.base_url} does not serve {model!r}; it serves: "
        + (", ".join(names) or "nothing")
    )


def extension(obj: Any, name: str) -> Any:
    """A lorag extension field (`sources`, `lorag`) of an openai response or chunk object."""
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get(name)


def describe_error(err: BaseException) -> str:
    """A one-line description of a failed request."""
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {err.message}"
    if isinstance(err, openai.APITimeoutError):
        return "timeout"
    if isinstance(err, openai.APIConnectionError):
        return f"connection error: {err}"
    return f"{type(err).__name__}: {err}"
