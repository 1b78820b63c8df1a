"""The core: connection state (lanes, the connection-local response cache, forks, eviction), turn planning,
the turn's event stream, and the limits both transports enforce.

Sans-I/O: no sockets, no event loop, no clock; callers pass times in and carry events out.
"""
