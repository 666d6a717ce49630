"""Benchmarks of the fan-out: N WebSocket clients in one room, one publisher, against two bare relays.

`python -m bench` (or `make bench`) runs every scenario of `bench.scenarios` with the same load generators
(`bench.loadgen`, driven by `bench.run`) and prints deliveries per second, latency percentiles, loss, memory
per idle connection and CPU per 1000 deliveries; `python -m bench --help` lists the options. It needs Linux
(it reads /proc), Redis and PostgreSQL for the two-process scenarios, and `.[bench]` for `--profile` and
`--ws wsproto`. `docs/PERFORMANCE.md` has the figures of this machine and what they mean.
"""
