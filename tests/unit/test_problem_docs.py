"""The problem catalogue: which representation a client prefers, the HTML page escapes what it
shows, and the README's error list names every problem type of gateway/problems.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.app import prefers_html, problem_page
from gateway.problems import GatewayError, base_url_for, problem_types
from gateway.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize(("accept", "html"), [
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # browsers
    ("text/html", True),
    ("", False),
    ("*/*", False),
    ("application/json", False),
    ("application/json, text/html", False),  # a tie: JSON
    ("text/html;q=0.5, application/json;q=0.9", False),
    ("text/*;q=0.9, application/*;q=0.8", True),
    ("text/html;q=0, */*", False),
    ("text/html;q=nonsense, application/json;q=0.1", False),
])
def test_html_only_when_the_client_ranks_it_above_json(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


def test_the_documentation_page_escapes_every_value() -> None:
    page = problem_page({"type": "https://x/problems/a\"><script>", "slug": "a",
                         "title": "<b>bold</b>", "status": 400,
                         "description": "1 < 2 & 'quotes'"})
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "1 &lt; 2 &amp; &#x27;quotes&#x27;" in page
    assert "&quot;&gt;&lt;script&gt;" in page


def test_problem_types_are_absolute_and_never_from_a_request() -> None:
    assert base_url_for(Settings()) == "http://127.0.0.1:8080/problems/"
    assert base_url_for(Settings(host="::", port=9000)) == "http://[::]:9000/problems/"
    assert base_url_for(Settings(public_url="https://gw.example.com/")) == \
        "https://gw.example.com/problems/"


def test_the_readme_lists_every_problem_type() -> None:
    text = README.read_text()
    errors = text[text.index("\n## Errors\n"):]
    errors = errors[:errors.index("\n## ", 1)]
    listed = set(re.findall(r"^\| `([a-z][a-z-]+)` \| (\d{3}) \|", errors, re.MULTILINE))
    expected = {(slug, str(cls.status)) for slug, cls in problem_types().items()}
    assert expected - listed == set(), "missing from the README's Errors section"
    assert {slug for slug, _ in listed} - set(problem_types()) == set(), "not a problem type"
    assert GatewayError.slug == "internal-error"
