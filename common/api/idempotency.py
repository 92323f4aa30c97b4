"""``Idempotency-Key`` for POST requests, kept in the document store.

One record per (user, key). The first request *reserves* it: the record turns
*pending* with a fingerprint of the method, path and body and a random owner
token that only that request knows. Then:

* the same key with the same fingerprint gets the stored response once there
  is one (``Idempotent-Replayed: true``), or 409 ``idempotency_key_in_progress``
  while the reservation is pending; with another fingerprint, 409
  ``idempotency_key_reused``. A rejected request holds nothing, so it changes
  nothing: it never releases or finishes the reservation of another request.
* routes whose effect is one transaction (create a job, start a run, upload
  files, create an automation) commit that effect only while the request still
  holds its reservation, and record the response to replay in the same
  transaction (:class:`ReservationGuard`): exactly one effect per key, however
  requests interleave, even when a slow request's reservation was taken over.
* only the holder (by its token) finishes or releases its reservation; it
  releases it only when its handler failed before any effect was recorded,
  so the client may try again with the same key.
* a pending reservation older than ``PENDING_TIMEOUT_S`` belongs to a request
  that died; the next request takes it over by compare-and-set (a transaction
  over the record), so of many racing requests exactly one wins.

Keys expire after ``ttl_s``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from common.api.errors import ApiError
from common.ports.clock import Clock
from common.ports.store import Snapshot, Store, Transaction

log = logging.getLogger("sluice.api.idempotency")

COLLECTION = "idempotency"
MAX_KEY_LENGTH = 255
# A pending record older than this belongs to a request that died: the key may be taken over.
PENDING_TIMEOUT_S = 120.0
PENDING, DONE = "pending", "done"
T = TypeVar("T")


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reservation:
    """A request's hold on its key; ``token`` proves it is this request's."""

    owner: str
    doc_id: str
    fingerprint: str
    token: str


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


def in_progress(message: str = "a request with this Idempotency-Key is still being handled") -> ApiError:
    return ApiError(
        409,
        "idempotency_key_in_progress",
        message,
        details={"hint": "Retry in a moment to get its response."},
        headers={"Retry-After": "1"},
    )


def _stored(d: dict[str, Any]) -> StoredResponse:
    headers = d.get("headers")
    return StoredResponse(
        int(d["status"]),
        str(d["body"]),
        str(d["content_type"]),
        {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
    )


def _held_by(snap: Snapshot | None, res: Reservation) -> bool:
    return snap is not None and snap.data.get("token") == res.token


class Idempotency:
    def __init__(self, store: Store, clock: Clock, *, ttl_s: float) -> None:
        self._store = store
        self._clock = clock
        self._ttl_s = float(ttl_s)

    def begin(self, owner: str, key: str, fp: str) -> StoredResponse | Reservation:
        """The stored response to replay, or this request's new reservation of the key.

        Raises ApiError 409 while another request holds the key, or if the key
        was used for a different request; such a request holds nothing.
        """
        doc_id = _doc_id(owner, check_key(key))
        token = secrets.token_hex(16)

        def tx(t: Transaction) -> StoredResponse | Reservation:
            now = self._clock.now().timestamp()
            snap = t.get(COLLECTION, doc_id)
            if snap is not None and float(snap.data["expires_at"]) > now:
                d = snap.data
                if d["fingerprint"] != fp:
                    raise ApiError(
                        409,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used with a different request",
                        details={"hint": "Use a new key for a new request."},
                    )
                if d["state"] == DONE:
                    return _stored(d)
                if float(d["started_at"]) >= now - PENDING_TIMEOUT_S:
                    raise in_progress()
                # A stale pending reservation: taken over here. The transaction read
                # this very version, so of racing takers-over exactly one commits.
                log.warning("taking over a stale idempotency reservation", extra={"fields": {"doc_id": doc_id}})
            t.set(
                COLLECTION,
                doc_id,
                {
                    "owner": owner,
                    "fingerprint": fp,
                    "state": PENDING,
                    "token": token,
                    "started_at": now,
                    "expires_at": now + self._ttl_s,
                },
            )
            return Reservation(owner=owner, doc_id=doc_id, fingerprint=fp, token=token)

        return self._store.transaction(tx)

    # -- inside an effect's transaction ---------------------------------------------

    def check_held(self, t: Transaction, res: Reservation) -> None:
        """Raise unless ``res`` still holds its key, pending (a read: call it before writing)."""
        snap = t.get(COLLECTION, res.doc_id)
        if not _held_by(snap, res) or snap is None or snap.data.get("state") != PENDING:
            raise in_progress("this request's Idempotency-Key reservation was taken over by a retry")

    def record_done(self, t: Transaction, res: Reservation, response: StoredResponse) -> None:
        now = self._clock.now().timestamp()
        t.set(COLLECTION, res.doc_id, self._done_doc(res, response, now))

    def _done_doc(self, res: Reservation, response: StoredResponse, now: float) -> dict[str, Any]:
        return {
            "owner": res.owner,
            "fingerprint": res.fingerprint,
            "state": DONE,
            "token": res.token,
            "started_at": now,
            "expires_at": now + self._ttl_s,
            "status": response.status,
            "body": response.body,
            "content_type": response.content_type,
            "headers": dict(response.headers),
        }

    # -- after the handler ------------------------------------------------------------

    def finish(self, res: Reservation, response: StoredResponse) -> bool:
        """Store the response of ``res``'s request, if it still holds its key.

        False if it no longer does (taken over) or a guarded effect already
        recorded the response (the same transaction as the effect; kept).
        """

        def tx(t: Transaction) -> bool:
            snap = t.get(COLLECTION, res.doc_id)
            if not _held_by(snap, res) or snap is None or snap.data.get("state") != PENDING:
                return False
            t.set(COLLECTION, res.doc_id, self._done_doc(res, response, self._clock.now().timestamp()))
            return True

        done = self._store.transaction(tx)
        if not done and not self.recorded(res):
            log.warning("idempotency reservation lost before its response was stored")
        return done

    def recorded(self, res: Reservation) -> bool:
        """True if ``res``'s request recorded its effect (its response is stored under its token)."""
        snap = self._store.get(COLLECTION, res.doc_id)
        return _held_by(snap, res) and snap is not None and snap.data.get("state") == DONE

    def release(self, res: Reservation) -> bool:
        """Free the key after ``res``'s handler failed before any effect: only the
        holder's own pending reservation is deleted, never another request's and
        never a recorded effect."""

        def tx(t: Transaction) -> bool:
            snap = t.get(COLLECTION, res.doc_id)
            if not _held_by(snap, res) or snap is None or snap.data.get("state") != PENDING:
                return False
            t.delete(COLLECTION, res.doc_id)
            return True

        return self._store.transaction(tx)


class ReservationGuard(Generic[T]):
    """An :class:`common.service.effects.EffectGuard` for one request's reservation:
    the effect commits only while the request holds its key, and the response
    (``render(result)``) is recorded in the effect's transaction."""

    def __init__(
        self, idempotency: Idempotency, reservation: Reservation, render: Callable[[T], StoredResponse]
    ) -> None:
        self._idem = idempotency
        self._res = reservation
        self._render = render

    def check(self, t: Transaction) -> None:
        self._idem.check_held(t, self._res)

    def record(self, t: Transaction, result: T) -> None:
        self._idem.record_done(t, self._res, self._render(result))
