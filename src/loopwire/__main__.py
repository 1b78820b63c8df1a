"""`python -m loopwire`: the same as the `loopwire` command.

Owns nothing else.
"""

from .cli import main

raise SystemExit(main())
