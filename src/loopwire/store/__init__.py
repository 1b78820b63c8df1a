"""Durable homes for stored responses: a bounded in-memory store and SQLite.

Stores persist finished responses; they do not decide what to cache per connection.
"""
