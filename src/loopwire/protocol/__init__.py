"""The Responses API wire format: typed items, requests, responses, events, errors and ids.

Pure data and codecs; no sockets, no event loop, no clock beyond what callers pass in.
"""
