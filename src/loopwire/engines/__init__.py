"""Model engines behind one small streaming interface.

Each engine turns a conversation into deltas; none of them knows the wire format or the transports. An
engine package (sim, openai_chat, responses_upstream, local) never imports another: what they share lives
in `common/` (tests/test_engine_imports.py checks it).
"""
