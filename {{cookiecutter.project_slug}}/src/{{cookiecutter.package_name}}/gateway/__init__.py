"""The gateway: one public entry point spreading HTTP requests and WebSockets over the app instances."""

from .app import create_gateway

__all__ = ["create_gateway"]
