"""Child processes of tests that send them SIGINT."""

from __future__ import annotations

import sys

#: Python code that makes Ctrl-C raise KeyboardInterrupt even when the tests run
#: with SIGINT ignored: a shell that starts a command in the background without
#: job control (as a CI script may) sets SIGINT to "ignore", children inherit
#: that, and Python then installs no handler, so a test's SIGINT would be lost.
TAKE_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"

#: The dispatchkit command line, taking SIGINT as a terminal user's Ctrl-C would.
CLI_TAKING_SIGINT = [
    sys.executable,
    "-c",
    TAKE_SIGINT + "import sys; from dispatchkit.cli import main; sys.exit(main(sys.argv[1:]))",
]
