"""The transports: one ASGI application serving HTTP (JSON and SSE) and WebSocket mode on /v1/responses.

Thin shells that read bytes, call the protocol and the core, and write events; no protocol rules here.
"""
