"""The `fairsweep` command. Heavy libraries load inside the commands that need them.

`app` (its frame, shared options) is in `cli/app.py`; the commands that run or check a sweep in
`cli/sweeps.py`, those that look at what exists in `cli/inspect.py`; what a run prints at its end in
`cli/output.py`.
"""

from __future__ import annotations

import gc
import sys

from fairsweep.cli import sweeps  # noqa: F401, I001 (importing registers the commands, in the help's order)
from fairsweep.cli import inspect  # noqa: F401
from fairsweep.cli.app import USER_ERROR_EXIT, UserError, app, err_console  # noqa: F401
from fairsweep.cli.output import SCREEN_ROWS, _mean_std, _screenful  # noqa: F401


def main() -> None:
    try:
        app()
    except UserError as exc:  # raised outside a command's own handling
        for problem in exc.problems:
            err_console.print(f"error: {problem}", highlight=False, soft_wrap=True)
        sys.exit(USER_ERROR_EXIT)
    finally:
        # The command is done: spare the interpreter's exit its last garbage collection over the millions
        # of objects torch, Ray and MLflow leave (1.7 s of the 2.0 s a `fairsweep run` took to exit here).
        # atexit handlers still run, acyclic objects are still freed as the modules are torn down; the
        # operating system reclaims the rest.
        gc.freeze()


if __name__ == "__main__":
    main()
