"""The docs cannot go stale where a test can tell: the spec reference is what the code says, the README
stays a front page whose paths exist, and nothing points outside the project."""

import re
import subprocess
import sys

from conftest import ROOT


def test_the_spec_reference_is_generated_from_the_code():
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "spec_reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_readme_is_a_front_page_whose_paths_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert text.startswith("# fairsweep")
    paths = set(re.findall(r"`((?:fairsweep|sweeps|docs|analysis|benchmarks|tests)/[\w./-]*)`", text))
    paths |= set(re.findall(r"\]\(((?:docs|analysis|sweeps)/[\w./-]+)\)", text))
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert paths and missing == []


def test_nothing_points_outside_the_project():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "fairsweep").rglob("*.py"),
             *(ROOT / "sweeps").rglob("*.yaml"), *(ROOT / "analysis").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    pointing = [str(f.relative_to(ROOT)) for f in files if re.search(r"\.\./shared|DESIGN\.md", f.read_text())]
    assert pointing == []
