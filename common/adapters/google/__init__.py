"""Google API adapters: per-user OAuth (``auth``), token encryption at rest (``crypto``), the
shared error classifier (``errors``), Drive (``drive``) and Gmail (``gmail``).

The names below load on first use: importing the Drive adapter (which every
bootstrap does) must not import the OAuth machinery and httplib2 with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.adapters.google.auth import GOOGLE_TOKEN_URI, AuthorizedHttp, GoogleOAuth
    from common.adapters.google.crypto import TokenCipher, TokenDecryptError, load_or_create_key

_WHERE = {
    "GOOGLE_TOKEN_URI": "auth",
    "AuthorizedHttp": "auth",
    "GoogleOAuth": "auth",
    "TokenCipher": "crypto",
    "TokenDecryptError": "crypto",
    "load_or_create_key": "crypto",
}

__all__ = [
    "GOOGLE_TOKEN_URI",
    "AuthorizedHttp",
    "GoogleOAuth",
    "TokenCipher",
    "TokenDecryptError",
    "load_or_create_key",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
