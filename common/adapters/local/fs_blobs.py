"""Blobs on the local filesystem, named ``local://bucket/name``.

Writes are atomic (temp file, fsync, rename), so a reader never sees half an
object and a crash leaves either the old object or the new one. Metadata lives
in a sidecar JSON file. Buckets the topology marks with ``finalize`` publish a
``blob.finalized`` event after each write, like GCS notifications.

Errors keep the port's contract: a missing object is BlobNotFound, a refused
permission BlobAccessDenied, any other failure of the filesystem (EIO, a full
disk, too many open files) BlobUnavailable -- transient, retried by policy.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast
from urllib.parse import quote, urlencode

from common.adapters.blob_errors import ClassifiedReader, Classify, SourceFailed, classified, read_source
from common.core.errors import BlobAccessDenied, BlobNotFound, BlobUnavailable, PreconditionFailed
from common.ports.blobs import BlobInfo
from common.ports.clock import Clock

FinalizeHook = Callable[[BlobInfo], None]
SCHEME = "local"


def parse_uri(uri: str, scheme: str = SCHEME) -> tuple[str, str]:
    prefix = f"{scheme}://"
    if not uri.startswith(prefix):
        raise ValueError(f"{uri!r} is not a {prefix} URI; this backend stores only {prefix} objects")
    bucket, _, name = uri[len(prefix) :].partition("/")
    if not bucket or not name:
        raise ValueError(f"{uri!r} must name a bucket and an object")
    return bucket, name


def _safe_parts(bucket: str, name: str) -> tuple[str, ...]:
    p = PurePosixPath(name)
    raw_parts = name.split("/")
    if p.is_absolute() or any(part in ("", ".", "..") for part in raw_parts) or "\\" in name or "\x00" in name:
        raise ValueError(f"object name {name!r} is not a safe relative path")
    if not bucket.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"bucket name {bucket!r} is invalid")
    return (bucket, *p.parts)


def _os_errors(uri: str, *, reading: bool) -> Classify:
    def classify(exc: Exception) -> Exception | None:
        if reading and isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError):
            return BlobNotFound(f"no object at {uri}")
        if isinstance(exc, PermissionError):
            return BlobAccessDenied(
                f"{uri}: {exc.strerror or exc}", hint="Check the permissions of the data directory (SLUICE_DATA_DIR)."
            )
        if isinstance(exc, OSError):
            return BlobUnavailable(f"{uri}: the filesystem failed: {exc.strerror or exc} (errno {exc.errno})")
        return None

    return classify


@contextmanager
def _mapped(classify: Classify) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        err = classified(exc, classify)
        if err is exc:
            raise
        raise err from (None if isinstance(exc, SourceFailed) else exc)


class FsBlobStore:
    scheme = SCHEME

    def __init__(
        self,
        root: Path | str,
        *,
        clock: Clock,
        signing_key: bytes | None = None,
        url_base: str = "http://127.0.0.1:8080",
        durable: bool = True,
    ) -> None:
        self._root = Path(root)
        self._clock = clock
        self._durable = durable
        self._url_base = url_base.rstrip("/")
        self._hooks: dict[str, FinalizeHook] = {}
        self._key = signing_key
        self._root.mkdir(parents=True, exist_ok=True)

    # -- configuration --------------------------------------------------------

    def on_finalize(self, bucket: str, hook: FinalizeHook) -> None:
        """Call ``hook`` after every completed write to ``bucket``."""
        self._hooks[bucket] = hook

    def _signing_key(self) -> bytes:
        if self._key is None:
            key_file = self._root / ".signing-key"
            try:
                self._key = key_file.read_bytes()
            except FileNotFoundError:
                key = secrets.token_bytes(32)
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, key)
                finally:
                    os.close(fd)
                self._key = key
        return self._key

    # -- paths ----------------------------------------------------------------

    def uri(self, bucket: str, name: str) -> str:
        _safe_parts(bucket, name)
        return f"{SCHEME}://{bucket}/{name}"

    def _paths(self, uri: str) -> tuple[str, str, Path, Path]:
        bucket, name = parse_uri(uri)
        parts = _safe_parts(bucket, name)
        data = self._root.joinpath("objects", *parts)
        meta = self._root.joinpath("meta", *parts[:-1], parts[-1] + ".json")
        return bucket, name, data, meta

    def path_of(self, uri: str) -> Path:
        """The file behind an object (for the local API's download route)."""
        return self._paths(uri)[2]

    # -- writing --------------------------------------------------------------

    def put_bytes(
        self,
        uri: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        if_generation: str | None = None,
    ) -> BlobInfo:
        return self._write(uri, lambda f: f.write(data), content_type, metadata, if_generation)

    def put_stream(
        self,
        uri: str,
        stream: BinaryIO,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        chunk_size: int = 8 * 1024 * 1024,
    ) -> BlobInfo:
        def copy(f: BinaryIO) -> None:
            while chunk := read_source(stream, chunk_size):
                f.write(chunk)

        return self._write(uri, copy, content_type, metadata, None)

    def _write(
        self,
        uri: str,
        fill: Callable[[BinaryIO], object],
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        if_generation: str | None,
    ) -> BlobInfo:
        with _mapped(_os_errors(uri, reading=False)):
            info = self._store(uri, fill, content_type, metadata, if_generation)
        # Outside the mapping: the hook's failures are the bus's, not the store's.
        hook = self._hooks.get(info.bucket)
        if hook is not None:
            hook(info)
        return info

    def _store(
        self,
        uri: str,
        fill: Callable[[BinaryIO], object],
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        if_generation: str | None,
    ) -> BlobInfo:
        bucket, name, path, meta_path = self._paths(uri)
        if if_generation is not None:
            current = self.stat(uri)
            current_gen = "0" if current is None else current.generation
            if current_gen != if_generation:
                raise PreconditionFailed(f"{uri}: generation is {current_gen}, expected {if_generation}")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                if self._durable:
                    os.fsync(f.fileno())
            size = os.path.getsize(tmp)
            generation = str(time.time_ns())
            now = self._clock.now()
            meta = {
                "content_type": content_type,
                "metadata": dict(metadata or {}),
                "generation": generation,
                "updated": now.isoformat(),
                "size": size,
            }
            self._atomic_json(meta_path, meta)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return BlobInfo(
            uri=uri,
            bucket=bucket,
            name=name,
            size=size,
            content_type=content_type,
            updated=now,
            generation=generation,
            metadata=dict(metadata or {}),
        )

    def _atomic_json(self, path: Path, value: object) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
            f.flush()
            if self._durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)

    # -- reading --------------------------------------------------------------

    def open(self, uri: str) -> BinaryIO:
        classify = _os_errors(uri, reading=True)
        path = self._paths(uri)[2]
        with _mapped(classify):
            f = path.open("rb")
        return cast(BinaryIO, io.BufferedReader(ClassifiedReader(f, classify)))

    def get_bytes(self, uri: str, *, max_bytes: int | None = None) -> bytes:
        path = self._paths(uri)[2]
        with _mapped(_os_errors(uri, reading=True)), path.open("rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:
            raise ValueError(f"{uri} is larger than {max_bytes} bytes")
        return data

    def stat(self, uri: str) -> BlobInfo | None:
        bucket, name, path, meta_path = self._paths(uri)
        with _mapped(_os_errors(uri, reading=False)):
            try:
                st = path.stat()
                meta = json.loads(meta_path.read_text())
            except FileNotFoundError:
                return None
        return BlobInfo(
            uri=uri,
            bucket=bucket,
            name=name,
            size=st.st_size,
            content_type=meta.get("content_type"),
            updated=datetime.fromisoformat(meta["updated"]),
            generation=str(meta["generation"]),
            metadata=dict(meta.get("metadata") or {}),
        )

    def delete(self, uri: str) -> bool:
        _, _, path, meta_path = self._paths(uri)
        with _mapped(_os_errors(uri, reading=False)):
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            meta_path.unlink(missing_ok=True)
        return True

    def list(self, bucket: str, prefix: str = "") -> Iterator[BlobInfo]:
        base = self._root / "objects" / bucket
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fname in sorted(filenames):
                if fname.startswith(".tmp-"):
                    continue
                rel = Path(dirpath, fname).relative_to(base).as_posix()
                if rel.startswith(prefix):
                    info = self.stat(self.uri(bucket, rel))
                    if info is not None:
                        yield info

    def delete_bucket_contents(self, bucket: str) -> None:
        shutil.rmtree(self._root / "objects" / bucket, ignore_errors=True)
        shutil.rmtree(self._root / "meta" / bucket, ignore_errors=True)

    # -- signed URLs ----------------------------------------------------------

    def signed_url(self, uri: str, *, expires: timedelta, method: str = "GET") -> str:
        """A URL the local API serves; an HMAC over method, object and expiry."""
        bucket, name = parse_uri(uri)
        exp = int((self._clock.now() + expires).timestamp())
        sig = self._sign(method, bucket, name, exp)
        query = urlencode({"expires": exp, "signature": sig})
        return f"{self._url_base}/v1/blobs/{quote(bucket)}/{quote(name)}?{query}"

    def verify_signature(self, method: str, bucket: str, name: str, expires: int, signature: str) -> bool:
        if expires < self._clock.now().timestamp():
            return False
        # Bytes: compare_digest refuses str with non-ASCII characters (a forged
        # signature must be a clean "no", not an exception).
        return hmac.compare_digest(self._sign(method, bucket, name, expires).encode(), signature.encode())

    def _sign(self, method: str, bucket: str, name: str, expires: int) -> str:
        msg = f"{method}\n{bucket}\n{name}\n{expires}".encode()
        return hmac.new(self._signing_key(), msg, hashlib.sha256).hexdigest()
