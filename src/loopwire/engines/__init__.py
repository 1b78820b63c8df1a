"""Model engines behind one small streaming interface.

Each engine turns a conversation into deltas; none of them knows the wire format or the transports.
"""
