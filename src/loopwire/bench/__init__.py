"""`loopwire bench`: the benchmarks, one command each (cli.py lists them).

Owns the package's description only. The agent loop: grid (what is measured), measure (one rollout),
campaign (the run), report, plots, progress, agent_cli. Per turn: turns (+ echo, the bare floor), stages
(run_turn in process), gateway (+ gateway_chat, gateway_responses, upstreams), local_kv, soak, store_put.
Shared: processes (servers and link emulators; the tests start servers with it too), wire (the lean
clients), workload (the synthetic conversation), table, cpu. All but `stages` use only loopwire's public
interfaces (the server command, the client, the agent, netem); `stages` drives `server.runner.run_turn`.
"""
