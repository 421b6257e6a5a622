"""Where inputs and outputs live: a local path, or an fsspec URL (``s3://``, ``gs://``, ``http(s)://``).

Every stage names its files with plain strings; this module is the one place that tells a URL from a
local path and talks to fsspec. Local paths (and ``file://`` URLs, which become local paths) keep the
plain filesystem calls and their speed.

Credentials and endpoints come the standard way: the ``AWS_*`` variables (``AWS_ENDPOINT_URL``
included), AWS profiles, ``GOOGLE_APPLICATION_CREDENTIALS``; plus ``storage.options``, a mapping
given to fsspec, either flat (every protocol) or keyed by protocol (``{s3: {...}, gs: {...}}``).
:func:`configure` installs it for the process; stages call it at start and in every Ray worker.
Options are never logged nor written to ``config.yaml`` (the config field is marked secret).

Writing to an object store is atomic per object: an object appears whole when its upload completes
(single PUT or a completed multipart upload), never half-written. So outputs are staged on local
disk and uploaded under their final name once complete (:func:`upload_file`, :func:`put_bytes`).
"""

from __future__ import annotations

import contextlib
import errno
import glob as _glob
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from .fsutil import atomic_path, atomic_write_bytes

__all__ = [
    "BucketNotFoundError",
    "ObjectNotFoundError",
    "StorageError",
    "StorageOptionsError",
    "StoragePermissionError",
    "StorageUnreachableError",
    "classify_error",
    "configure",
    "exists",
    "filesystem",
    "glob",
    "info",
    "is_url",
    "isdir",
    "join",
    "listdir",
    "local_path",
    "name_of",
    "open_input",
    "open_with_info",
    "options_for",
    "parent",
    "protocol",
    "put_bytes",
    "read_bytes",
    "read_many",
    "download_file",
    "check_bucket",
    "redact",
    "remove",
    "upload_file",
    "walk_files",
    "walk_files_info",
    "worker_env",
    "setup_worker",
]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# protocols fsspec knows under another name
_ALIASES = {"s3a": "s3", "gcs": "gs"}
_OPTIONS: dict[str, dict[str, Any]] = {}
_GLOBAL: dict[str, Any] = {}
KNOWN_PROTOCOLS = ("s3", "gs", "http", "https", "file", "memory", "az", "abfs", "hf")


class StorageError(OSError):
    """An object store or URL could not be read or written; ``url`` names it (credentials redacted)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        self.reason = reason
        super().__init__(f"{self.url}: {reason}")

    def __reduce__(self):  # picklable, so it crosses Ray like VideoError
        return (type(self), (self.url, self.reason))


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """No object (or file) at that URL."""


class BucketNotFoundError(StorageError):
    """The bucket (or host) itself does not exist: nothing under it can be read or written."""


class StoragePermissionError(StorageError, PermissionError):
    """The credentials in use may not read or write that URL."""


class StorageUnreachableError(StorageError):
    """The endpoint did not answer (no such host, connection refused, time-out)."""


class StorageOptionsError(StorageError):
    """``storage.options`` or the URL's protocol is unusable (unknown protocol, package not installed)."""


def is_url(path: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` other than ``file://`` (which is a local path)."""
    if not isinstance(path, str):
        return False
    m = _SCHEME.match(path)
    return m is not None and m.group(1).lower() != "file"


def protocol(path: str) -> str:
    """``s3`` for ``s3://b/k``, ``file`` for a local path."""
    m = _SCHEME.match(path) if isinstance(path, str) else None
    if not m:
        return "file"
    p = m.group(1).lower()
    return _ALIASES.get(p, p)


def local_path(path: str | os.PathLike[str]) -> Path:
    """The local path of a non-URL (``file://`` prefix removed)."""
    if isinstance(path, str) and path.lower().startswith("file://"):
        return Path(path[len("file://") :])
    return Path(path)


def redact(url: str) -> str:
    """``url`` without any ``user:password@`` part or query string (signed URLs carry keys there)."""
    if not is_url(url):
        return str(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def configure(options: Mapping[str, Any] | None) -> None:
    """Install ``storage.options`` for this process (replacing what was installed before).

    A mapping whose keys are all protocol names (``s3``, ``gs``, ...) is per protocol; anything else
    applies to every protocol.
    """
    _OPTIONS.clear()
    _GLOBAL.clear()
    _quiet_client_logs()
    options = dict(options or {})
    if options and all(_ALIASES.get(k, k) in KNOWN_PROTOCOLS for k in options):
        for k, v in options.items():
            if not isinstance(v, Mapping):
                raise StorageOptionsError(f"storage.options.{k}", "must be a mapping of fsspec options")
            _OPTIONS[_ALIASES.get(k, k)] = dict(v)
    else:
        _GLOBAL.update(options)


def _quiet_client_logs() -> None:
    """The storage clients log routine facts at INFO ("Found credentials in environment variables"):
    keep them to warnings unless someone set their level."""

    for name in ("aiobotocore", "botocore", "s3fs", "fsspec", "gcsfs"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def options_for(proto: str) -> dict[str, Any]:
    """The fsspec options for ``proto``: the standard environment, then ``storage.options``."""
    opts: dict[str, Any] = {}
    if proto == "s3":
        # botocore reads AWS_ENDPOINT_URL itself from 1.31; s3fs passes it on too, but name it so an older
        # botocore still talks to the configured endpoint
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["endpoint_url"] = endpoint
    opts.update(_GLOBAL)
    opts.update(_OPTIONS.get(proto, {}))
    return opts


def filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for a URL."""
    # deferred: fsspec at import
    import fsspec

    proto = protocol(url)
    try:
        fs = fsspec.filesystem(proto, **options_for(proto))
    except (ImportError, ValueError) as e:
        hint = {"s3": "s3fs", "gs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(proto)
        extra = f" (pip install {hint})" if hint else ""
        raise StorageOptionsError(url, f"cannot use protocol '{proto}': {e}{extra}") from e
    except TypeError as e:
        raise StorageOptionsError(url, f"storage.options not accepted by fsspec '{proto}': {e}") from e
    return fs, fs._strip_protocol(url)


def _fresh(url: str) -> tuple[Any, str]:
    """``filesystem(url)`` with its listing cache dropped: another process may have written since."""
    fs, p = filesystem(url)
    fs.invalidate_cache()
    return fs, p


#: The standard variables that tell fsspec where and as whom to connect; forwarded to Ray workers
#: (as actor/task arguments, never through runtime_env, logs or config files) by :func:`worker_env`.
ENV_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
)


def worker_env() -> dict[str, str]:
    """The driver's storage variables, to hand to a Ray worker with :func:`setup_worker`."""
    return {k: os.environ[k] for k in ENV_VARS if k in os.environ}


def setup_worker(options: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> None:
    """In a Ray worker: the driver's storage variables and ``storage.options``, before any I/O."""
    if env:
        os.environ.update(env)
    configure(options)


def _url(fs: Any, path: str) -> str:
    return fs.unstrip_protocol(path)


def classify_error(exc: BaseException, url: str) -> StorageError:
    """One typed :class:`StorageError` for whatever fsspec, botocore or aiohttp raised about ``url``."""
    if isinstance(exc, StorageError):
        return exc
    cause = exc.__cause__
    if type(exc) is FileNotFoundError and cause is not None and not isinstance(cause, FileNotFoundError):
        # fsspec's http filesystem reports every failed request as FileNotFoundError(url) raised from the
        # real error (connection refused, 403, ...): the cause tells what happened
        inner = classify_error(cause, url)
        if type(inner) is not StorageError:
            return inner
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if "nosuchbucket" in low or "bucket does not exist" in low or "specified bucket does not exist" in low:
        return BucketNotFoundError(url, "the bucket does not exist")
    if isinstance(exc, FileNotFoundError) or "nosuchkey" in low or "404" in low or "not found" in low:
        return ObjectNotFoundError(url, "no such object or file")
    if (
        isinstance(exc, PermissionError)
        or "accessdenied" in low
        or "forbidden" in low
        or "403" in low
        or "invalidaccesskeyid" in low
        or "signaturedoesnotmatch" in low
    ):
        return StoragePermissionError(url, f"permission denied ({type(exc).__name__})")
    connection = (
        isinstance(exc, (ConnectionError, TimeoutError))
        or "connect" in low
        or "name or service not known" in low
        or "timed out" in low
        or "endpoint" in low
    )
    if connection:
        return StorageUnreachableError(url, f"unreachable ({_short(exc)})")
    if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
        return ObjectNotFoundError(url, "no such object or file")
    return StorageError(url, _short(exc))


def _short(exc: BaseException) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg[:200]}" if msg else type(exc).__name__


# --- reading ------------------------------------------------------------------------------------------


def open_input(path: str | os.PathLike[str], mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """A streaming file object for a local path or URL (objects are read in blocks, never copied whole)."""
    if not is_url(str(path)):
        return open(local_path(path), mode, **kwargs)  # noqa: SIM115
    url = str(path)
    fs, p = filesystem(url)
    try:
        return fs.open(p, mode, **kwargs)
    except Exception as e:
        raise classify_error(e, url) from e


def _version_of(details: Mapping[str, Any]) -> dict[str, Any]:
    """``{"size", "etag"}`` (when the store has a version tag) from fsspec's description of an object."""
    out: dict[str, Any] = {"size": int(details.get("size") or 0)}
    tag = details.get("ETag") or details.get("etag") or details.get("md5Hash") or details.get("generation")
    if tag:
        out["etag"] = str(tag).strip('"')
    return out


def open_with_info(
    path: str | os.PathLike[str], block_size: int | None = None, known: Mapping[str, Any] | None = None
) -> tuple[IO[bytes], dict[str, Any]]:
    """A streaming binary file object and what identifies this version of it, from one open.

    The second item is :func:`info`'s ``{"size", "mtime_ns"}`` or ``{"size", "etag"}``: the object store
    describes the object when it is opened, so this costs no extra request. ``block_size``: the fsspec
    read-ahead block (None: the filesystem's default). ``known``: the version a listing already gave
    (``{"size", "etag"}``): an S3 object is then opened without asking for it again (no HEAD request).
    """
    if not is_url(str(path)):
        local = local_path(path)
        f = open(local, "rb")  # noqa: SIM115 - the caller closes it
        st = os.fstat(f.fileno())
        return f, {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    url = str(path)
    fs, p = filesystem(url)
    kwargs: dict[str, Any] = {} if block_size is None else {"block_size": block_size}
    if known and "size" in known and protocol(url) == "s3":
        try:
            f = fs.open(p, "rb", size=int(known["size"]), **kwargs)
        except Exception as e:
            raise classify_error(e, url) from e
        # s3fs reads the file's details on its first range read: without them it asks (a HEAD per
        # object), unless this process listed the prefix itself (a Ray worker did not)
        f.details = {"name": p, "size": int(known["size"]), "type": "file"}
        if known.get("etag"):
            f.details["ETag"] = f'"{known["etag"]}"'
        return f, dict(known)
    try:
        f = fs.open(p, "rb", **kwargs)
        details = getattr(f, "details", None) or {"size": f.size}
    except Exception as e:
        raise classify_error(e, url) from e
    return f, _version_of(details)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    with open_input(path, "rb") as f:
        return f.read()


def read_many(paths: list[str]) -> dict[str, bytes]:
    """``{path: bytes}`` of many small files or objects (fetched concurrently from a store); missing ones
    are left out."""
    out: dict[str, bytes] = {}
    urls = [p for p in paths if is_url(p)]
    for p in paths:
        if not is_url(p):
            with contextlib.suppress(FileNotFoundError):
                out[p] = local_path(p).read_bytes()
    if not urls:
        return out
    fs, _ = filesystem(urls[0])
    stripped = {fs._strip_protocol(u): u for u in urls}
    try:
        got = fs.cat(list(stripped), on_error="omit")
    except Exception as e:
        raise classify_error(e, urls[0]) from e
    for k, v in got.items():
        if isinstance(v, bytes):
            out[stripped[k]] = v
    return out


def download_file(path: str | os.PathLike[str], local: str | os.PathLike[str]) -> None:
    """Copy a whole file or object to a local path."""
    if not is_url(str(path)):
        shutil.copyfile(local_path(path), local)
        return
    url = str(path)
    fs, p = filesystem(url)
    try:
        fs.get_file(p, str(local))
    except Exception as e:
        raise classify_error(e, url) from e


def check_bucket(url: str) -> None:
    """Fail at once, with :class:`BucketNotFoundError`, when an output URL's bucket does not exist."""
    if not is_url(url) or protocol(url) in ("http", "https", "memory", "hf"):
        return
    fs, p = _fresh(url)
    bucket = p.split("/", 1)[0]
    try:
        ok = bool(fs.exists(bucket))
    except Exception as e:
        raise classify_error(e, url) from e
    if not ok:
        raise BucketNotFoundError(url, f"the bucket '{bucket}' does not exist (create it first)")


def exists(path: str | os.PathLike[str]) -> bool:
    if not is_url(str(path)):
        return local_path(path).exists()
    url = str(path)
    fs, p = _fresh(url)
    try:
        return bool(fs.exists(p))
    except Exception as e:
        raise classify_error(e, url) from e


def isdir(path: str | os.PathLike[str]) -> bool:
    if not is_url(str(path)):
        return local_path(path).is_dir()
    url = str(path)
    fs, p = _fresh(url)
    try:
        return bool(fs.isdir(p))
    except Exception as e:
        raise classify_error(e, url) from e


def info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"size", "mtime_ns"}`` of a local file, or ``{"size", "etag"}`` (when the store has one) of an object."""
    if not is_url(str(path)):
        st = local_path(path).stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    url = str(path)
    fs, p = _fresh(url)
    try:
        d = fs.info(p)
    except Exception as e:
        raise classify_error(e, url) from e
    return _version_of(d)


def listdir(path: str | os.PathLike[str]) -> list[str]:
    """Full names (URLs for a URL) of the entries directly under ``path``, sorted; [] when absent."""
    if not is_url(str(path)):
        folder = local_path(path)
        return sorted(str(c) for c in folder.iterdir()) if folder.is_dir() else []
    url = str(path)
    fs, p = _fresh(url)
    try:
        names = fs.ls(p, detail=False)
    except FileNotFoundError:
        return []
    except Exception as e:
        raise classify_error(e, url) from e
    return sorted(_url(fs, n) for n in names if n.rstrip("/") != p.rstrip("/"))


def glob(pattern: str) -> list[str]:
    """Full names matching a glob (``*``, ``**``, ``?``, ``[..]``), sorted."""
    if not is_url(pattern):
        return sorted(_glob.glob(str(local_path(pattern)), recursive=True))
    fs, p = _fresh(pattern)
    try:
        return sorted(_url(fs, n) for n in fs.glob(p))
    except Exception as e:
        raise classify_error(e, pattern) from e


# --- names --------------------------------------------------------------------------------------------


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """``base/part/...`` for a URL or a local path (returned as a string)."""
    if not is_url(str(base)):
        return str(local_path(base).joinpath(*parts))
    out = str(base).rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def name_of(path: str | os.PathLike[str]) -> str:
    """The last component of a path or URL."""
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_url(str(path)) else local_path(path).name


def parent(path: str | os.PathLike[str]) -> str:
    if not is_url(str(path)):
        return str(local_path(path).parent)
    return str(path).rstrip("/").rsplit("/", 1)[0]


# --- writing ------------------------------------------------------------------------------------------


def put_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a whole file or object atomically (local: temporary file + rename; object store: one PUT)."""
    if not is_url(str(path)):
        atomic_write_bytes(local_path(path), data)
        return
    url = str(path)
    fs, p = filesystem(url)
    try:
        fs.pipe_file(p, data)
    except Exception as e:
        raise classify_error(e, url) from e


def upload_file(local: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Copy a complete local file to ``path`` so that readers see all of it or nothing."""
    if not is_url(str(path)):
        with atomic_path(local_path(path)) as tmp:
            shutil.copyfile(local, tmp)
        return
    url = str(path)
    fs, p = filesystem(url)
    try:
        fs.put_file(str(local), p)
    except Exception as e:
        raise classify_error(e, url) from e


def remove(paths: str | list[str]) -> None:
    """Delete files or objects; missing ones are ignored."""
    items = [paths] if isinstance(paths, str) else list(paths)
    urls = [p for p in items if is_url(p)]
    for p in items:
        if not is_url(p):
            local_path(p).unlink(missing_ok=True)
    if not urls:
        return
    fs, _ = filesystem(urls[0])
    stripped = [fs._strip_protocol(u) for u in urls]
    try:
        fs.rm(stripped)
    except FileNotFoundError:
        pass
    except Exception as e:
        raise classify_error(e, urls[0]) from e


def walk_files_info(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(URL, {"size", "etag"})`` of every object under a URL prefix, recursively, sorted: the listing
    carries each object's version, so nothing is asked per object."""
    fs, p = _fresh(path)
    try:
        found = fs.find(p, detail=True)
    except Exception as e:
        raise classify_error(e, path) from e
    for name in sorted(found):
        yield _url(fs, name), _version_of(found[name])


def walk_files(path: str) -> Iterator[str]:
    """Every file under a local folder or URL prefix, recursively, sorted."""
    if not is_url(path):
        root = local_path(path)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                yield str(Path(dirpath) / name)
        return
    fs, p = _fresh(path)
    try:
        found = fs.find(p)
    except Exception as e:
        raise classify_error(e, path) from e
    for name in sorted(found):
        yield _url(fs, name)
