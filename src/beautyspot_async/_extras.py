"""What each optional extra installs, and the one hint users see when it is missing."""

from __future__ import annotations

from typing import Final

__all__ = ["EXTRAS", "install_hint"]

#: Extra name -> the packages it adds.
EXTRAS: Final = {
    "postgres": ("asyncpg",),
    "redis": ("redis",),
    "s3": ("aiobotocore",),
    "dashboard": ("starlette", "uvicorn", "jinja2", "markdown"),
}


def install_hint(extra: str) -> str:
    """How to get ``extra``: its packages by name (beautyspot-async is not on an index)."""
    packages = " ".join(EXTRAS[extra])
    return f'pip install {packages} (the "{extra}" extra of beautyspot-async)'
