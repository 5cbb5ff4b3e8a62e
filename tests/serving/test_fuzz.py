"""Schema-based fuzzing: requests that schemathesis derives from the app's own OpenAPI
schema, valid and invalid, to every operation; none may get a 5xx.

Bounded and reproducible: a fixed number of examples per operation and mode, derandomized,
no example database. The app runs on the scripted engine with a domain and an adapter, so
valid requests reach the routes' logic rather than stop at a 404. Half the JSON bodies
get a lone surrogate in one of their strings, which Hypothesis itself never generates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")  # the `dev` extra

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.app import create_app
from tests.serving.conftest import ADMIN, retrieval_settings, serving_settings
from tests.serving.test_api import app_with

EXAMPLES = 10  # per operation and mode: 10 x 32 pairs, 320 requests in about 10 s


def _schema() -> Any:
    """The OpenAPI schema of an app that is never started (building one does no I/O)."""
    nowhere = Path("/nonexistent")
    app = create_app(serving_settings(nowhere, nowhere), retrieval_settings(nowhere), nowhere)
    return schemathesis.openapi.from_dict(app.openapi())


def _cases() -> list[Any]:
    """(operation, mode) pairs; invalid requests only where there is something to get wrong
    (any string is a valid path parameter)."""
    pairs = []
    for result in _schema().get_all_operations():
        operation = result.ok()
        locations = {parameter.location.value for parameter in operation.iter_parameters()}
        has_input = bool(locations - {"path"}) or bool(operation.body)
        for mode in schemathesis.GenerationMode:
            if has_input or mode is schemathesis.GenerationMode.POSITIVE:
                label = f"{operation.method.upper()} {operation.path} {mode.value}"
                pairs.append(pytest.param(operation, mode, id=label))
    return pairs


@pytest.fixture(scope="module")
def fuzz_api(
    srv_model: Path, srv_adapters_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    adapter = ("/admin/adapters", {"name": "acme", "path": "acme/v1"})
    domain = ("/admin/domains", {"name": "acme", "adapter": "acme"})
    with app_with(srv_model, srv_adapters_root, tmp_path_factory, "fuzz", adapter, domain) as app:
        yield app


def _strings(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every string (dict keys excluded) in a JSON value."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for key, child in value.items() for p in _strings(child, (*path, key))]
    if isinstance(value, list):
        return [p for n, child in enumerate(value) for p in _strings(child, (*path, n))]
    return []


def _spoil(body: Any, path: tuple) -> Any:
    """`body` with a lone surrogate appended to the string at `path`: JSON can carry one
    (`\\ud800`) and Hypothesis never generates one."""
    if not path:
        return body + "\ud800"
    copy = dict(body) if isinstance(body, dict) else list(body)
    copy[path[0]] = _spoil(body[path[0]], path[1:])
    return copy


QUESTION = [{"role": "user", "content": "What is the refund window?"}]
KNOWN = {"model": ["base", "acme"], "domain": ["acme"], "name": ["acme"], "messages": [QUESTION]}


def _aim(case: Any, data: st.DataObject) -> None:
    """Point some cases at the domain, adapter and base model served, with a question, so
    that they get past the lookup (a random name is a 404) into templating and generation."""
    for fields in (case.body, case.path_parameters):
        if not isinstance(fields, dict):
            continue
        for field in KNOWN.keys() & fields.keys():
            choices = [*KNOWN[field], fields[field]]
            fields[field] = data.draw(st.sampled_from(choices), label=field)


def _send(client: TestClient, case: Any, data: st.DataObject):
    _aim(case, data)
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=ADMIN)
    kwargs.pop("cookies", None)
    if "data" in kwargs and not isinstance(kwargs["data"], dict | type(None)):
        kwargs["content"] = kwargs.pop("data")  # raw bodies: httpx's name for them
    if "json" in kwargs:
        body = kwargs.pop("json")
        targets = _strings(body)
        if targets and data.draw(st.booleans(), label="spoil a string"):
            body = _spoil(body, data.draw(st.sampled_from(targets), label="which"))
        kwargs["content"] = json.dumps(body).encode("ascii")  # escapes a surrogate
        kwargs["headers"] = {**kwargs["headers"], "content-type": "application/json"}
    return client.request(**kwargs)


@pytest.mark.parametrize(("operation", "mode"), _cases())
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_no_generated_request_gets_a_5xx(
    fuzz_api: TestClient, operation: Any, mode: Any, data: st.DataObject
) -> None:
    case = data.draw(operation.as_strategy(generation_mode=mode))
    response = _send(fuzz_api, case, data)
    assert response.status_code < 500, f"{case.as_curl_command()}\n{response.text[:2000]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
