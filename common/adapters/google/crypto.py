"""Encryption at rest for users' Google refresh tokens.

AES-256-GCM with a random 96-bit nonce per token. The owner and the account
are bound in as associated data, so a ciphertext copied onto another user's
record does not decrypt. The stored form names the key it was sealed with
(a short fingerprint, not the key), so a wrong key is reported as such rather
than as corrupt data::

    v1.<key fingerprint>.<base64url(nonce || ciphertext || tag)>

The key is 32 bytes from the deployment: on the embedded backend a key file
under the data directory (:func:`load_or_create_key`, mode 0600), in the cloud
Secret Manager.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.core.errors import ConfigError

KEY_BYTES = 32
_VERSION = "v1"
_NONCE_BYTES = 12


class TokenDecryptError(ConfigError):
    """A stored token cannot be decrypted with the configured key."""

    code = "token_key_mismatch"
    hint = (
        "The token-encryption key is not the one the token was sealed with: restore the old key, "
        "or have the user reconnect the Google account."
    )


def key_fingerprint(key: bytes) -> str:
    return hashlib.sha256(b"sluice-token-key:" + key).hexdigest()[:12]


class TokenCipher:
    """Seals and opens refresh tokens; holds the key, never logs it."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"the token-encryption key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self._kid = key_fingerprint(key)

    def __repr__(self) -> str:
        return f"TokenCipher(kid={self._kid})"

    def seal(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_VERSION}.{self._kid}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, token: str, *, context: str) -> str:
        version, _, rest = token.partition(".")
        kid, _, body = rest.partition(".")
        if version != _VERSION or not body:
            raise TokenDecryptError("the stored token is not in a format this version of Sluice reads")
        if kid != self._kid:
            raise TokenDecryptError(
                f"the stored token was sealed with key {kid}, but the configured key is {self._kid}"
            )
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error) as exc:
            # Same key, but the data or its owner binding does not match.
            raise TokenDecryptError("the stored token does not decrypt for this owner and account") from exc


def load_or_create_key(path: Path) -> bytes:
    """The embedded backend's token key: read it, or create it (mode 0600) on first use.

    The file holds the key base64-encoded. A key file other users can read is
    refused rather than used: the tokens it protects grant access to mail and files.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        # link() fails if the name exists: of two processes creating a key at
        # once, one wins and the other reads the winner's (never a half-written file).
        os.link(tmp, path)
    except FileExistsError:
        return _read_key(path)
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _read_key(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by other users (mode {mode:o})", hint=f"chmod 600 {path}")
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path} does not hold a base64-encoded {KEY_BYTES}-byte key")
    return key
