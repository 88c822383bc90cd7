"""The README and docs/ as a reader meets them: every relative link lands, the README stays one sitting long,
no page names an internal issue number, and the README's two commands are the ones CI runs.

Every ``docs/*.md`` is covered (globbed, not listed), so a page added later is checked too.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README] + sorted((REPO / "docs").glob("*.md"))
ISSUE = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)

_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"(?<!\\)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (a `[x](y)` inside code is not a link)."""
    out, fence = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fence = not fence
            continue
        if not fence:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    seen: Dict[str, int] = {}
    out: Set[str] = set()
    fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line.strip()):
            fence = not fence
            continue
        m = None if fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = _slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> List[str]:
    prose = _prose(path.read_text(encoding="utf-8"))
    return _LINK.findall(prose) + _REF_DEF.findall(prose)


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) and not target.startswith("//")


def _broken(page: Path) -> List[Tuple[str, str]]:
    bad = []
    for target in links(page):
        if not _relative(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            bad.append((target, "no such file"))
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append((target, f"no heading with anchor #{anchor} in {dest.name}"))
    return bad


def test_there_are_docs_pages():
    assert len(PAGES) > 5, PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert links(page) or page != README, "the README links nowhere?"
    assert _broken(page) == [], f"{page.relative_to(REPO)}: broken links"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_internal_issue_numbers(page):
    hits = [line.strip() for line in page.read_text(encoding="utf-8").splitlines() if ISSUE.search(line)]
    assert hits == [], f"{page.relative_to(REPO)} names internal issues: {hits}"


def test_linked_bench_reports_name_no_internal_issue_numbers():
    linked = {(page.parent / t.partition("#")[0]).resolve() for page in PAGES for t in links(page) if _relative(t)}
    reports = [p for p in linked if p.suffix == ".md" and p.is_file() and REPO / "docs" not in p.parents
               and p != README]
    assert reports, "no linked report found"
    for p in reports:
        hits = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if ISSUE.search(line)]
        assert hits == [], f"{p.relative_to(REPO)} (linked from the docs) names internal issues: {hits}"


def test_readme_is_one_sitting_long():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= 300, f"README.md has {n} lines (at most 300: move depth to docs/)"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(README) if _relative(t)}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert orphans == [], f"docs pages the README does not link: {orphans}"


def test_readme_two_commands_are_the_ones_ci_runs():
    text = README.read_text(encoding="utf-8")
    assert "./scripts/demo.sh" in text and "./scripts/test.sh" in text
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^bash scripts/test\.sh\s*$", ci, re.MULTILINE), ".ci/run must end with the README's test command"
    assert "bash scripts/setup.sh" in ci
    for script in ("setup.sh", "demo.sh", "test.sh"):
        assert (REPO / "scripts" / script).is_file()


def test_slug_matches_github():
    assert _slug("Your own photos: train → export → run") == "your-own-photos-train--export--run"
    assert _slug("The run loop (`edgecls run` over folders, videos, cameras)") == \
        "the-run-loop-edgecls-run-over-folders-videos-cameras"
    assert _slug("Any timm backbone (`--arch timm:<name>`)") == "any-timm-backbone---arch-timmname"


def test_a_broken_link_is_caught(tmp_path):
    page = tmp_path / "p.md"
    (tmp_path / "there.md").write_text("# Here\n", encoding="utf-8")
    page.write_text("[a](there.md) [b](there.md#here) [c](missing.md) [d](there.md#nowhere) `[e](x.md)`\n"
                    "```\n[f](also-missing.md)\n```\n[g](https://example.com)\n", encoding="utf-8")
    assert [t for t, _ in _broken(page)] == ["missing.md", "there.md#nowhere"]
