"""The toy coding agent: a fixture repository, real tools, a scripted sim policy and the agent loop.

Owns the package's description only; it imports nothing, so the sim engine can load `policy` cheaply.
Modules: fixture (the repository), tools (the tools), policy (the sim's script), loop (the loop), cli.
"""
