"""/metrics labels take only names the server knows: requests naming unknown domains and
models count under `other` instead of adding a series each (unbounded label values)."""

from __future__ import annotations

import random
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.serving.conftest import ADMIN, CHAT
from tests.serving.test_api import chat_body, running_app

CHAT_URL = "/v1/chat/completions"


def _label_values(text: str) -> dict[str, set[str]]:
    """Every label value in a /metrics scrape, by metric family."""
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {v for k, v in sample.labels.items() if k not in ("le", "quantile")}
            values.setdefault(family.name.removesuffix("_created"), set()).update(labels)
    return values


def test_metric_labels_take_only_known_names(
    srv_model: Path, srv_adapters_root: Path, tmp_path: Path
) -> None:
    """Requests naming 50 unknown domains and models add no label values but `other`."""
    rng = random.Random(13)
    names = [f"nx-{rng.randrange(16**10):010x}" for _ in range(50)]
    with running_app(srv_model, srv_adapters_root, tmp_path / "data") as (client, _):
        client.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v1"})
        client.post("/admin/domains", headers=ADMIN, json={"name": "docs", "index": True})
        for model in ("acme", "base", "tiny-llama", "docs"):  # known: their own labels
            client.post(CHAT_URL, headers=CHAT, json=chat_body(model))
        client.post("/v1/search", headers=CHAT, json={"domain": "docs", "query": "x"})
        client.get("/admin/domains/docs", headers=ADMIN)  # and the routes below, known names
        client.get("/admin/feedback/export?domain=docs&adapter=acme", headers=ADMIN)
        client.get("/metrics")
        before = _label_values(client.get("/metrics").text)
        for name in names:
            client.post(CHAT_URL, headers=CHAT, json=chat_body(name))
            client.post(CHAT_URL, headers=CHAT, json=chat_body(name, stream=True))
            client.post("/v1/search", headers=CHAT, json={"domain": name, "query": "x"})
            client.get(f"/admin/domains/{name}", headers=ADMIN)
            client.get(f"/admin/feedback/export?domain={name}&adapter={name}", headers=ADMIN)
        text = client.get("/metrics").text
    after = _label_values(text)
    assert not [name for name in names if name in text]
    new = {family: values - before.get(family, set()) for family, values in after.items()}
    assert {family: values for family, values in new.items() if values} == {
        "lorag_retrieval_seconds": {"other"}
    }
    assert 'lorag_retrieval_seconds_count{domain="other"} 50.0' in text
    assert 'lorag_retrieval_seconds_count{domain="docs"} 2.0' in text  # chat + search
    assert 'lorag_chat_requests_total{model="base",status="ok"} 2.0' in text  # both base names
    assert 'lorag_chat_requests_total{model="acme",status="ok"} 1.0' in text
