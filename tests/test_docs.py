"""The documentation matches the code: generated pages are current, links resolve, the README
stays a guide, results pages say what measured them, and the repository stands alone."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def test_command_set_page_is_generated_from_the_table():
    from elmoe3d.commands.docs import isa_page
    assert (DOCS / "isa.md").read_text() == isa_page(), "docs/isa.md is stale: run `elmoe3d docs`"


@pytest.mark.parametrize("page,top,params", __import__("elmoe3d.commands.docs", fromlist=["x"]).INTERFACE_PAGES)
def test_interface_pages_list_the_current_ports_and_notes(page, top, params):
    """Every port of the component (its signature, no Verilog needed) is in the committed page
    with its direction and width, and the top's notes are there word for word."""
    from elmoe3d.hw.interface_doc import describe
    from elmoe3d.hw.tops import get_top
    t = get_top(top)
    full = {p.name: p.default for p in t.params}
    full.update(params)
    comp = t.build(**full)
    text = (DOCS / "interfaces" / f"{page}.md").read_text()
    for p in describe(comp)["ports"]:
        row = f"| `{p['name']}` | {p['dir']} | {p['width']} |"
        assert row in text, f"docs/interfaces/{page}.md lacks {row}: run `elmoe3d docs`"
    for note in getattr(type(comp), "INTERFACE_NOTES", ()):
        assert note.split("{")[0].strip()[:60] in text, f"docs/interfaces/{page}.md: stale notes, run `elmoe3d docs`"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    missing = []
    for target, _ in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        if not (page.parent / target).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(REPO)} links to missing {missing}"


def test_readme_is_a_guide():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("page", sorted((DOCS / "results").glob("*.md")), ids=lambda p: p.name)
def test_results_pages_say_what_measured_them(page):
    head = page.read_text()[:600]
    assert re.search(r"Measured by `[^`]+` at commit `[0-9a-f]{7,}", head), \
        f"{page.name} lacks the command/commit stamp of elmoe3d.results_page.write_page"


def test_the_repository_stands_alone():
    """No page sends a reader to a file a clone does not have."""
    offenders = [str(p.relative_to(REPO)) for p in PAGES if "shared/SPEC.md" in p.read_text()]
    assert not offenders, f"pages that cite ../shared/SPEC.md: {offenders}"
