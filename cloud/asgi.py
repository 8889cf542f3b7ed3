"""ASGI entry point: ``uvicorn cloud.asgi:app`` (settings from BENCHLINK_* variables)."""

from cloud.app import create_app

app = create_app()
