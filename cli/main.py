"""The `strongroom` console script.

`strongroom --version` is answered before click is imported: click alone takes longer to import than the
interpreter takes to start, and the version check is what start-up benchmarks and shell prompts call.
"""

from __future__ import annotations

import sys

from cli import VERSION_LINE


def main() -> None:
    """Run the strongroom command line; a CliError ends it with one sentence on stderr and exit status 1."""
    if sys.argv[1:] == ["--version"]:
        sys.stdout.write(VERSION_LINE + "\n")
        return
    from cli.root import strongroom

    strongroom.main(prog_name="strongroom")


if __name__ == "__main__":
    main()
