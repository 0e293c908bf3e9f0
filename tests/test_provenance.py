"""A record's ``commit`` names the code that ran: ``+dirty`` only when the package's own sources differ from it."""

import importlib.util
import shutil
import subprocess
from pathlib import Path

import dualrec.utils


def _checkout(tmp_path: Path):
    """A git repository holding a copy of dualrec/utils.py as its package and one tracked result record; the copy
    imported from there, so its ``source_commit`` looks at that repository."""
    pkg = tmp_path / "src" / "pkg"
    pkg.mkdir(parents=True)
    shutil.copy(dualrec.utils.__file__, pkg / "utils.py")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "x"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()

    def fresh():
        spec = importlib.util.spec_from_file_location("copied_utils", pkg / "utils.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.source_commit()
    return pkg, head, fresh


def test_a_rewritten_result_record_leaves_the_commit_clean(tmp_path):
    pkg, head, source_commit = _checkout(tmp_path)
    assert source_commit() == head
    (tmp_path / "results" / "r.json").write_text('{"metrics": {}}\n')
    assert source_commit() == head


def test_an_edited_package_source_marks_the_commit_dirty(tmp_path):
    pkg, head, source_commit = _checkout(tmp_path)
    (pkg / "utils.py").write_text((pkg / "utils.py").read_text() + "\n# edited\n")
    assert source_commit() == head + "+dirty"
