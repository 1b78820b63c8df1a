"""`python -m loopwire.agent`: the agent's command line.

Owns the process entry point only; must not parse arguments itself (cli.main does).
"""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
