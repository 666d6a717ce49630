"""What the service is measured against: the same fan-out with no engine, in one process and across Redis,
and the library whose API the engine implements.

- `relay`: a bare Starlette app that writes each frame it receives to every socket it holds.
- `redis_relay`: the same, except that a frame is published on one Redis channel and every process
  subscribed to it writes it to its own sockets.
- `distributed_websocket`: fastapi-distributed-websocket 0.2.0, the library whose API the engine
  implements, in one process or across Redis.
"""
