"""A shared store on Redis (or Valkey): standalone, TLS, Sentinel or Cluster, through redis-py asyncio.

Holds what several `loopwire serve` nodes must share: stored responses, and the per-key limits that must hold
across nodes. Needs the `redis` extra (`pip install 'loopwire[redis]'`); nothing here is imported unless a
`redis...://` store is configured.
"""
