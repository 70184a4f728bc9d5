"""``elmoe3d docs``: regenerate the generated pages of ``docs/``.

- ``isa.md``: the command set, from ``elmoe3d/spec/isa.py`` (the ``default`` configuration);
- ``interfaces/<top>.md``: the interface page of the core (``small`` preset) and of the command
  processor, exactly as ``elmoe3d generate`` writes them beside the Verilog.

``tests/test_docs.py`` fails when a committed page differs from what the code generates.
"""

import sys
import tempfile
from pathlib import Path

HELP = "regenerate docs/isa.md and docs/interfaces/*.md from the code"

REPO_DOCS = Path(__file__).resolve().parents[2] / "docs"
# (page, top, parameters): the tops whose interface pages docs/ carries
INTERFACE_PAGES = (("core", "core", {"preset": "small"}),
                   ("command_processor", "command_processor", {"preset": "small"}))


def add_arguments(p):
    p.add_argument("-o", "--out", metavar="DIR", default=str(REPO_DOCS),
                   help="docs folder to write into (default: the checkout's docs/)")


def isa_page():
    from ..config import preset
    from ..firmware.isa_doc import isa_markdown
    from ..spec.isa import InstructionSet
    return isa_markdown(InstructionSet(preset("default")))


def interface_page(top_name, params):
    """The ``.md`` page ``elmoe3d generate`` writes for ``top_name`` with ``params``."""
    from ..hw.tops import get_top
    from ..hw.verilog import write_verilog
    top = get_top(top_name)
    full = {p.name: p.default for p in top.params}
    full.update(params)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_verilog(top.build(**full), top.name, tmp, full)
        return path.with_suffix(".md").read_text()


def run(args):
    from ..paths import output_dir, write_text
    out = output_dir(args.out)
    (out / "interfaces").mkdir(exist_ok=True)
    written = [write_text(out / "isa.md", isa_page())]
    for page, top, params in INTERFACE_PAGES:
        print(f"generating the interface page of {top} ({params})", file=sys.stderr, flush=True)
        written.append(write_text(out / "interfaces" / f"{page}.md", interface_page(top, params)))
    for w in written:
        print(w)
    return 0
