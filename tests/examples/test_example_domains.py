"""The example domains the quickstart trains and evaluates on must stay consistent."""

from pathlib import Path

import pytest

from examples.validate import validate_domain

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOMAINS = sorted(p.parent for p in EXAMPLES.glob("*/domain.yaml"))


def test_there_are_two_domains() -> None:
    assert [d.name for d in DOMAINS] == ["acme-router", "northwind-policies"]


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda d: d.name)
def test_domain_is_valid(domain: Path) -> None:
    report = validate_domain(domain)
    assert not report.problems, "\n".join(report.problems)
