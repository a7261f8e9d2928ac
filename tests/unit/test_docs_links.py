"""Relative links in the operator docs point at files that exist."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["README.md", "docs/install.md", "docs/troubleshooting.md", "docs/argocd-health.md",
         *(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "reference").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    path = ROOT / page
    text = re.sub(r"`[^`\n]*`", "", path.read_text())  # code spans are not links
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://|^#|^mailto:", target):
            continue
        file = target.split("#", 1)[0]
        assert (path.parent / file).exists(), f"{page}: broken link {target}"
