"""The README's layout section is the tree: every package and module under src/dualrec is named there, under its
package's entry, and every entry names something that exists."""

from __future__ import annotations

import re

from conftest import REPO

SRC = REPO / "src" / "dualrec"


def layout_entries() -> dict[str, str]:
    """``{entry head: its text}`` from the code block after "## How it is put together"."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## How it is put together", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    head = None
    for line in block.splitlines()[2:]:          # after the opening fence's tail and "src/dualrec/"
        m = re.match(r"^  (\S+)\s*(.*)$", line)
        if m:
            head = m.group(1)
            entries[head] = m.group(2)
        elif head and line.strip():
            entries[head] += " " + line.strip()
    return entries


def test_readme_layout_names_every_package_and_module_and_nothing_else():
    entries = layout_entries()
    packages = sorted(p.name + "/" for p in SRC.iterdir() if p.is_dir() and not p.name.startswith("__"))
    modules = sorted(p.name for p in SRC.glob("*.py") if p.name != "__init__.py")
    missing = [name for name in packages + modules if name not in entries]
    assert not missing, f"README's layout lacks {missing}"
    unknown = [head for head in entries if head not in packages + modules]
    assert not unknown, f"README's layout names {unknown}, which src/dualrec does not have"
    for package in packages:
        words = set(re.findall(r"[a-z_0-9]+", entries[package]))
        stems = sorted(p.stem for p in (SRC / package).glob("*.py") if p.stem != "__init__")
        absent = [s for s in stems if s not in words]
        assert not absent, f"README's {package} entry does not name {absent}"
