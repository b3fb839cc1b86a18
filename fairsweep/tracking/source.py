"""Where a sweep's runs came from: the spec file, the git commit of the repository holding it and whether its
tree was dirty, the fairsweep version. MLflow's own tag names where it has them, so its UI shows them (the
Source column: the spec file; Version: the commit)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fairsweep import __version__

SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_DIRTY_TAG = "fairsweep.git.dirty"
VERSION_TAG = "fairsweep.version"
GIT_TIMEOUT_S = 10.0  # each git call; a repository that takes longer is logged without its commit


def source_tags(spec_file: str | Path | None) -> dict[str, str]:
    """The source tags of every run of a sweep of `spec_file` (None: a sweep started from Python, with no
    file): computed once per sweep, by the driver. No commit where the file is in no git repository, or
    git is missing."""
    tags = {VERSION_TAG: __version__, SOURCE_TYPE_TAG: "LOCAL"}
    if spec_file is None:
        return tags
    path = Path(spec_file).expanduser().resolve()
    tags[SOURCE_NAME_TAG] = str(path)
    commit = _git(path.parent, "rev-parse", "--verify", "HEAD")
    if commit:
        tags[GIT_COMMIT_TAG] = commit
        tags[GIT_DIRTY_TAG] = str(_dirty(path)).lower()
    return tags


def _dirty(spec_file: Path) -> bool:
    """Whether the commit does not hold what ran: a tracked file changed (staged or not), or the spec file
    is not in the commit. Untracked files elsewhere (runs/, mlflow.db) do not count."""
    changed = _git(spec_file.parent, "status", "--porcelain", "--untracked-files=no")
    committed = _git(spec_file.parent, "ls-files", "--error-unmatch", "--", spec_file.name)
    return changed != "" or committed is None


def _git(folder: Path, *args: str) -> str | None:
    """git's output in `folder`, stripped; None if git is missing, fails or takes too long."""
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
