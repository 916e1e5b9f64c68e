"""The only place the CLI hands control to another program.

`replace_process` execs rather than spawning a child: the program gets the terminal, signals and exit status
directly, and no Strongroom process lingers holding the values in memory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from cli.errors import CliError


def replace_process(argv: Sequence[str], environ: Mapping[str, str]) -> NoReturn:
    """Exec `argv` (looked up on the PATH of `environ`) with `environ`; fail with 127 or 126 like a shell."""
    program = argv[0]
    # Anything buffered would be lost by exec.
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(program, list(argv), dict(environ))  # noqa: S606 (argv, never a shell string)
    except FileNotFoundError:
        raise CliError(f"{program}: command not found", exit_code=127) from None
    except PermissionError:
        raise CliError(f"{program}: permission denied", exit_code=126) from None
    except OSError as exc:
        raise CliError(
            f"{program}: cannot execute it ({(exc.strerror or 'error').lower()})", exit_code=126
        ) from None
