"""loopwire: a Responses API server with WebSocket mode, built to make agent loops fast.

This package root only names the version; everything else lives in its subpackages.
"""

__version__ = "0.1.0"
