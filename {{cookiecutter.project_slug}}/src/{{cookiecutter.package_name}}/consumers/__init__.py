"""The service's consumers: the application logic of its WebSocket endpoints, one instance per connection.

- `chat.RoomConsumer`, `/ws/rooms/{room}`: chat messages, replay after an id, presence and typing.
{%- if cookiecutter.use_notifications == "y" %}
- `notifications.NotificationConsumer`, `/ws/notifications`: MQTT-style topics and each user's notifications.
{%- endif %}

Each client frame type has a typed handler (`@handler`) taking the pydantic model that validates it; the
models the handlers and the class's `sends` declare are the documented protocol. `base.UserConsumer` gives
them a signed-in `user` and the rate limit. To add a frame type, add a model and a handler; to add an
endpoint, subclass `UserConsumer` and give it a route in `routers/realtime.py`.
"""
