"""Results pages: what a bench command measured, stamped with the commit and date it measured.

Figures copied by hand into documentation go stale when a default changes. Every command that
measures something a document quotes writes its own page instead, through :func:`write_page`,
into ``docs/results/<name>.md`` of the checkout (or a folder the caller names). The page starts
with the command that produced it, the commit (``git describe --always --dirty``; ``unknown``
outside a git checkout) and the UTC date, so a reader sees how old a figure is and how to
regenerate it.
"""

import datetime
import subprocess
from pathlib import Path

from .paths import write_text

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "docs" / "results"


def commit():
    """``git describe --always --dirty`` of the checkout, or ``"unknown"``."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def command_line(name, default=None):
    """The command line that ran ``elmoe3d <name>`` in this process, for a page's stamp; when it
    was not run from the command line (a test calling ``cli.main``), ``default`` (``elmoe3d <name>``)."""
    import sys
    if sys.argv[1:2] == [name]:
        return " ".join(["elmoe3d", *sys.argv[1:]])
    return default or f"elmoe3d {name}"


def stamp(command):
    """The header lines of a results page: the command, the commit and the date."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Measured by `{command}` at commit `{commit()}` on {now}.\n"
            f"Run the same command to regenerate this page.\n")


def write_page(name, title, command, body, folder=None):
    """Write ``<folder>/<name>.md`` (default ``docs/results``) and return its path.

    ``title``: the page's heading; ``command``: the command line that measured it (quoted on
    the page); ``body``: Markdown of the figures.
    """
    folder = Path(folder) if folder is not None else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    write_text(path, f"# {title}\n\n{stamp(command)}\n{body.rstrip()}\n")
    return path
