"""``Idempotency-Key`` for POST requests, kept in the document store.

The first request with a key records it as *pending* (with a fingerprint of
the method, path and body) and, once handled successfully, the response. A
later request with the same key and the same fingerprint gets the stored
response again; with a different fingerprint it is refused (409), and while
the first is still being handled it is refused too (409, retry later). Keys
are per user and expire after ``ttl_s``; a failed request (non-2xx) releases
its key so the client may try again.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import timedelta

from common.api.errors import ApiError
from common.core.errors import AlreadyExists, NotFound
from common.ports.clock import Clock
from common.ports.store import Store, Transaction

COLLECTION = "idempotency"
MAX_KEY_LENGTH = 255
# A pending record older than this belongs to a request that died: the key is free again.
PENDING_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str
    content_type: str


def fingerprint(method: str, path: str, body: bytes) -> str:
    h = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def _doc_id(owner: str, key: str) -> str:
    return "idem_" + hashlib.sha256(f"{owner}\x00{key}".encode()).hexdigest()[:40]


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ApiError(
            400, "invalid_idempotency_key", f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters"
        )
    return key


class Idempotency:
    def __init__(self, store: Store, clock: Clock, *, ttl_s: float) -> None:
        self._store = store
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_s)

    def begin(self, owner: str, key: str, fp: str) -> StoredResponse | None:
        """The stored response to replay, or None after recording the key as pending."""
        doc_id = _doc_id(owner, check_key(key))
        now = self._clock.now().timestamp()

        def tx(t: Transaction) -> StoredResponse | None:
            snap = t.get(COLLECTION, doc_id)
            if snap is not None:
                d = snap.data
                live = float(d["expires_at"]) > now
                stale = d["state"] == "pending" and float(d["started_at"]) < now - PENDING_TIMEOUT_S
                if live and not stale:
                    if d["fingerprint"] != fp:
                        raise ApiError(
                            409,
                            "idempotency_key_reused",
                            "this Idempotency-Key was used with a different request",
                            details={"hint": "Use a new key for a new request."},
                        )
                    if d["state"] == "pending":
                        raise ApiError(
                            409,
                            "idempotency_key_in_progress",
                            "a request with this Idempotency-Key is still being handled",
                            details={"hint": "Retry in a moment to get its response."},
                            headers={"Retry-After": "1"},
                        )
                    return StoredResponse(int(d["status"]), str(d["body"]), str(d["content_type"]))
            t.set(
                COLLECTION,
                doc_id,
                {
                    "owner": owner,
                    "fingerprint": fp,
                    "state": "pending",
                    "started_at": now,
                    "expires_at": now + self._ttl.total_seconds(),
                },
            )
            return None

        return self._store.transaction(tx)

    def finish(self, owner: str, key: str, fp: str, response: StoredResponse) -> None:
        doc_id = _doc_id(owner, key)
        now = self._clock.now().timestamp()
        self._store.set(
            COLLECTION,
            doc_id,
            {
                "owner": owner,
                "fingerprint": fp,
                "state": "done",
                "started_at": now,
                "expires_at": now + self._ttl.total_seconds(),
                "status": response.status,
                "body": response.body,
                "content_type": response.content_type,
            },
        )

    def release(self, owner: str, key: str) -> None:
        with contextlib.suppress(NotFound, AlreadyExists):
            self._store.delete(COLLECTION, _doc_id(owner, key))
