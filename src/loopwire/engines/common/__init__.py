"""What more than one engine needs, in one place: no module under `engines/X/` imports `engines/Y/`.

Holds no engine: each module below has one job (items as text, chat-message grouping, token estimates,
the upstream HTTP pool, the lane's affinity token); none of them imports an engine package.
"""
