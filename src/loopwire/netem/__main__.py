"""`python -m loopwire.netem --listen 127.0.0.1:9000 --target 127.0.0.1:8000 --profile wan`.

Owns nothing but the entry point; it must not hold logic (see command.py).
"""

from .command import main

raise SystemExit(main())
