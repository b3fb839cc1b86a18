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


def readme_commands() -> list[str]:
    """Every `fairsweep …` and `python …` command the README shows: in its code blocks (comments cut) and
    in its inline code."""
    text = (ROOT / "README.md").read_text()
    lines = [line.split("  #")[0].strip() for block in re.findall(r"```\n(.*?)```", text, re.S)
             for line in block.splitlines()]
    lines += re.findall(r"`((?:fairsweep|python) [^`]+)`", text)
    commands = []
    for line in lines:
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith(("fairsweep ", "python ")):
                commands.append(part)
    return sorted(set(commands))


def test_every_readme_command_names_what_exists_and_what_its_command_takes(tmp_path):
    """Each `fairsweep` command is one the CLI has, with options it takes and specs that load (an embedded
    one validates in full); each `python` script exists and answers `--help`. The end-to-end tests run the
    same commands on the quicker digits spec."""
    import shlex

    import typer

    from conftest import fairsweep_cli
    from fairsweep.cli import app
    from fairsweep.spec import load_spec

    commands = typer.main.get_command(app).commands
    seen = set()
    for line in readme_commands():
        words = shlex.split(line)
        if words[0] == "python":
            script = ROOT / words[1]
            assert script.is_file(), line
            result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT)
            assert result.returncode == 0, (line, result.stderr)
            continue
        name = words[1]
        assert name in commands, line
        seen.add(name)
        options = {opt for param in commands[name].params for opt in param.opts}
        given = [w for w in words[2:] if w.startswith("--")]
        assert set(given) <= options, (line, sorted(options))
        for spec in [w for w in words[2:] if w.endswith(".yaml")]:
            parsed = load_spec(ROOT / spec, [])
            if parsed.data.dataset in ("glyphs", "digits", "toy2d") and name in ("run", "validate"):
                result = fairsweep_cli("validate", str(ROOT / spec), "--storage", str(tmp_path / "runs"), cwd=tmp_path)
                assert result.returncode == 0, (line, result.stderr)
        if name == "datasets":
            assert fairsweep_cli(*words[1:], cwd=tmp_path).returncode == 0
    assert {"run", "validate", "datasets", "pareto"} <= seen
