"""The documentation as pages: a short README, every relative link and #anchor resolving (GitHub's heading slugs),
the settings page generated from `ExecutorSettings`, and every one-line error the plugin prints on the
troubleshooting page."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from snakemake_executor_plugin_azbatch.settings import settings_table

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "snakemake_executor_plugin_azbatch"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 300

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a page; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, heading in HEADING.findall(FENCE.sub("", markdown)):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(markdown: str) -> list[str]:
    """Link targets outside code blocks and code spans (a code span inside a link's text is kept as text)."""
    text = FENCE.sub("", markdown)
    text = CODE_SPAN.sub("code", text)
    return LINK.findall(text)


def link_problems(page: Path) -> list[str]:
    problems = []
    for target in links(page.read_text()):
        where = f"{page.relative_to(REPO)}: link {target!r}"
        parts = urlsplit(target)
        if parts.scheme:
            if parts.scheme not in ("http", "https") or not parts.netloc:
                problems.append(f"{where} is not an http(s) URL")
            continue
        path, _, fragment = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            problems.append(f"{where}: {path} does not exist")
            continue
        if fragment:
            if destination.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not markdown")
            elif fragment not in anchors(destination.read_text()):
                problems.append(f"{where}: {destination.relative_to(REPO)} has no heading with anchor #{fragment}")
    return problems


def test_the_slugs_follow_github():
    assert github_slug("The local Batch service: `azbatch-local`") == "the-local-batch-service-azbatch-local"
    assert github_slug("Simulated nodes (`--simulate`)") == "simulated-nodes---simulate"
    assert github_slug("Batch accounts without keys (Microsoft Entra ID only)") == (
        "batch-accounts-without-keys-microsoft-entra-id-only")
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_the_link_check_can_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "other.md").write_text("# Here\n")
    page = tmp_path / "page.md"
    page.write_text("[a](other.md#here) [b](other.md#gone) [c](missing.md) [d](#top) [e](ftp:/x) `[f](g.md)`\n"
                    "```\n[h](nowhere.md)\n```\n# Top\n")
    assert link_problems(page) == [
        "page.md: link 'other.md#gone': other.md has no heading with anchor #gone",
        "page.md: link 'missing.md': missing.md does not exist",
        "page.md: link 'ftp:/x' is not an http(s) URL",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    assert link_problems(page) == []


def test_the_readme_is_short_and_links_every_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES, "README.md is for the first steps: move text to docs/"
    linked = {Path(target.partition("#")[0]).name for target in links(readme)}
    unlinked = [page.name for page in PAGES[1:] if page.name not in linked]
    assert not unlinked, f"README.md links no page {unlinked}"


# -- the settings page ---------------------------------------------------------------------------------------------

def test_the_settings_page_is_what_the_generator_renders():
    page = (REPO / "docs" / "settings.md").read_text()
    assert settings_table.BEGIN in page and settings_table.END in page
    assert settings_table.rewrite(page) == page, (
        f"docs/settings.md is out of date with ExecutorSettings: run `{settings_table.REGENERATE}`")


def test_the_generator_replaces_only_the_table():
    stale = f"intro\n{settings_table.BEGIN}\n| old |\n{settings_table.END}\noutro\n"
    fresh = settings_table.rewrite(stale)
    assert fresh.startswith("intro\n" + settings_table.BEGIN) and fresh.endswith(settings_table.END + "\noutro\n")
    assert "| old |" not in fresh and "`--azbatch-pool-id`" in fresh


# -- the troubleshooting page --------------------------------------------------------------------------------------

# A message literal: "azbatch: ..." (an f-string or not) on one source line; its continuation lines are not read.
MESSAGE = re.compile(r'(?:\bf)?"(azbatch: [^"]*)"?')
# Debug and info lines are no errors (a call on the line, or on the line before when the literal starts a line).
QUIET = re.compile(r"\.(?:debug|info)\(|\blog\(")
STEM_WORDS = 5


def message_stems() -> dict[str, str]:
    """{file:line: stem} for every warning or error message the plugin wing can print: the longest literal piece
    of the message's first line between its placeholders, cut to its first words (the page may abridge the rest)."""
    stems = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "local" in path.relative_to(PACKAGE).parts:
            continue
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            match = MESSAGE.search(line)
            if not match:
                continue
            before = line[:match.start()]
            if QUIET.search(before) or (not before.strip() and number and QUIET.search(lines[number - 1])):
                continue
            pieces = re.split(r"\{[^}]*\}", match.group(1).removeprefix("azbatch: "))
            stem = " ".join(max((piece.strip(" ;:,()'") for piece in pieces), key=len).split()[:STEM_WORDS])
            if len(stem) >= 10:  # shorter pieces ("pool", "failed") say nothing on their own
                stems[f"{path.relative_to(REPO)}:{number + 1}"] = stem
    return stems


def test_the_message_extraction_finds_the_messages():
    stems = message_stems()
    assert len(stems) >= 100, len(stems)
    values = set(stems.values())
    assert "is not a valid pool" in values  # an f-string that starts with a placeholder
    assert "the Python package uv (a" in values  # a plain string
    assert "waiting task(s) replaced with fresh" not in values  # info lines are left out, on the line before too
    assert not any(stem.startswith(("created storage", "kept Batch job")) for stem in values)


def test_every_error_the_plugin_prints_is_on_the_troubleshooting_page():
    page = " ".join((REPO / "docs" / "troubleshooting.md").read_text().split())
    missing = {where: stem for where, stem in message_stems().items() if stem not in page}
    assert not missing, "docs/troubleshooting.md lacks these messages (add a row with the fix):\n" + "\n".join(
        f"{where}: {stem!r}" for where, stem in missing.items())
