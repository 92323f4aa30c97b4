"""Google API adapters: per-user OAuth (``auth``) and token encryption at rest (``crypto``)."""

from common.adapters.google.auth import GOOGLE_TOKEN_URI, AuthorizedHttp, GoogleOAuth
from common.adapters.google.crypto import TokenCipher, TokenDecryptError, load_or_create_key

__all__ = [
    "GOOGLE_TOKEN_URI",
    "AuthorizedHttp",
    "GoogleOAuth",
    "TokenCipher",
    "TokenDecryptError",
    "load_or_create_key",
]
