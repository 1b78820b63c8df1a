"""Connection state: lanes, the connection-local response cache, forks, eviction and turn planning.

Sans-I/O: no sockets, no event loop, no clock; callers pass times in and carry events out.
"""
