"""A small web dashboard over a Spot's stored results (extra ``[dashboard]``).

``create_app(spot)`` returns a Starlette application; ``serve(spot)`` runs it
with uvicorn on loopback. ``beautyspot-async ui DB`` does the latter. Importing
this package imports starlette, so nothing in the core imports it.
"""

from __future__ import annotations

from ._app import create_app, serve

__all__ = ["create_app", "serve"]
