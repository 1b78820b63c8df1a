"""The agent-loop benchmark: the toy coding agent over each transport, through an emulated link.

Owns the package's description only. Modules: grid (what is measured), processes (servers and link
emulators), cpu, samples (records), measure (one rollout), campaign (the run), report, plots, progress, cli.
It uses only loopwire's public interfaces (server command, client, agent, netem): it could live elsewhere.
"""
