"""The one module that talks to S3 (boto3): listings, HEAD and verified ranged GETs.

Every call has connect and read timeouts and runs under one retry policy
(:mod:`rangefs.remote.retry`) so a failed part is retried alone; this module only says which
failures are worth a retry (:func:`classify`). botocore's own retries are off: a body cut
mid-stream is not something botocore retries, and two nested retry loops would multiply
the budget.
"""

import base64
import contextlib
import datetime
import hashlib
import http.client
import logging
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
import botocore
import botocore.exceptions
import botocore.httpsession
import botocore.session
import botocore.utils
import urllib3.exceptions
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig

from rangefs.chunks import byte_range
from rangefs.config import S3Settings
from rangefs.errors import (
    AccessDenied,
    BadResponse,
    NoAnswer,
    NotFound,
    ObjectChanged,
    RangefsError,
    RemoteError,
    Transient,
    UsageError,
)
from rangefs.remote.retry import Retrier, RetryPolicy
from rangefs.remote.store import Checksum, Listing, ObjectFacts, ObjectInfo, RangeGet, Sink
from rangefs.remote.versions import VersionEntry
from rangefs.stats import Stats

log = logging.getLogger(__name__)

NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchBucket"}
DENIED_CODES = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
}
CHANGED_CODES = {"PreconditionFailed", "412"}
SSE_C_CODES = {"InvalidArgument", "InvalidRequest"}  # with a message about encryption keys
SSE_C_WORDS = ("customer", "server side encryption", "encryption parameters")
CREDENTIAL_ERRORS = (
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.TokenRetrievalError,
    botocore.exceptions.SSOError,
    botocore.exceptions.RefreshWithMFAUnsupportedError,
)
AWS_DOMAINS = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
CHECKSUM_FIELDS = {  # S3 sends one; the order only matters for a server sending several
    "ChecksumCRC64NVME": "crc64nvme",
    "ChecksumCRC32C": "crc32c",
    "ChecksumCRC32": "crc32",
    "ChecksumSHA256": "sha256",
    "ChecksumSHA1": "sha1",
}
MAX_PARTS_PAGE = 1000  # GetObjectAttributes lists at most this many parts per call
# No answer from S3 at all: what takes a mount offline once the retries are spent. A body cut
# after S3 answered (IncompleteRead, ResponseStreaming) and a TLS failure are not among them.
NO_ANSWER_ERRORS = (
    botocore.exceptions.EndpointConnectionError,  # refused, unreachable, DNS failure
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ProxyConnectionError,
    botocore.exceptions.ReadTimeoutError,  # also a body that stalls
    botocore.exceptions.ConnectionClosedError,  # reset or closed before a response
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    ConnectionRefusedError,
    ConnectionResetError,
    ConnectionAbortedError,
    TimeoutError,
    socket.gaierror,
)
TIMEOUT_ERRORS = (
    TimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
    urllib3.exceptions.TimeoutError,
)


T = TypeVar("T")
RECEIVE_PIECE = 256 * 1024  # a streaming GET's buffer: its RAM, and how often readers wake
# Whole objects up to this size are fetched by a lean GET (:class:`LeanGets`): one buffer.
LEAN_GET_MAX = RECEIVE_PIECE
ERROR_FIELD = re.compile(rb"<(Code|Message)>([^<]*)</")


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    err = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(err.get("Code", status)), int(status or 0)


def classify(exc: BaseException, what: str) -> BaseException:
    """Map a boto3 exception to a domain error, or to :class:`Transient` if worth a retry
    (:class:`NoAnswer` when S3 gave no answer at all: only that can take a mount offline)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = _error_code(exc)
        if code in CHANGED_CODES or status == 412:
            return ObjectChanged(f"{what}: object changed (412 Precondition Failed)")
        if code in NOT_FOUND_CODES or status == 404:
            return NotFound(f"{what}: {code}")
        if code in DENIED_CODES or status == 403:
            return AccessDenied(f"{what}: {code}")
        message = str(exc.response.get("Error", {}).get("Message", "")).lower()
        if code in SSE_C_CODES and any(word in message for word in SSE_C_WORDS):
            return AccessDenied(
                f"{what}: {code}: the object is encrypted with a customer key (SSE-C) and "
                "needs --sse-c-key-file, or is not and must be read without it"
            )
        if status == 400 and code == "400":  # a HEAD error has no body to say more
            return RemoteError(
                f"{what}: 400 Bad Request (an SSE-C object read without --sse-c-key-file?)"
            )
        if status >= 500 or status == 429 or code in {"SlowDown", "Throttling", "RequestTimeout"}:
            return Transient(f"{code} (HTTP {status})", f"http_{status}")
        return RemoteError(f"{what}: {code} (HTTP {status})")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return AccessDenied(f"{what}: no AWS credentials found")
    if isinstance(exc, CREDENTIAL_ERRORS):  # e.g. a credential_process failing at a renewal
        return AccessDenied(f"{what}: could not get AWS credentials: {' '.join(str(exc).split())}")
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return RemoteError(
            f"{what}: the endpoint's TLS certificate is not trusted ({_verify_reason(exc)}); "
            "a private CA's certificate goes in AWS_CA_BUNDLE"
        )
    cause = "timeout" if isinstance(exc, TIMEOUT_ERRORS) else "connection"
    if isinstance(exc, NO_ANSWER_ERRORS):
        return NoAnswer(f"{type(exc).__name__}: {exc}", cause)
    if isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.IncompleteReadError
        | botocore.exceptions.ResponseStreamingError
        | ConnectionError
        | OSError
        | http.client.HTTPException
        | urllib3.exceptions.HTTPError,
    ):
        return Transient(f"{type(exc).__name__}: {exc}", cause)
    return exc


def _verify_reason(exc: BaseException) -> str:
    """Why a certificate was refused, in OpenSSL's words (``self-signed certificate``)."""
    text = str(exc)
    found = re.search(r"certificate verify failed: ([^(]*)", text)
    return found.group(1).strip() if found else text


def make_boto_config(
    connect_timeout: float, read_timeout: float, pool: int, addressing_style: str
) -> BotoConfig:
    return BotoConfig(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=pool,
        s3={"addressing_style": addressing_style},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="rangefs",
    )


def is_aws_endpoint(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host.endswith(AWS_DOMAINS)


def parse_timestamp(value: str) -> datetime.datetime:
    """A timestamp of a response: S3's ISO 8601 ones (``LastModified`` of each listed key)
    by :meth:`datetime.datetime.fromisoformat`, any other form by botocore's parser (dateutil,
    ~20x slower: a listing of 1,500 keys spent 4 % of the daemon's CPU in a small-file walk)."""
    if value.endswith("Z") and "T" in value:
        try:
            return datetime.datetime.fromisoformat(value)
        except ValueError:
            pass
    parsed: datetime.datetime = botocore.utils.parse_timestamp(value)
    return parsed


def make_client(settings: S3Settings, pool: int) -> Any:
    """A boto3 S3 client from the standard credential chain; profile errors are user errors.

    The client is built from a session and given no keys, so botocore keeps the chain's
    refreshable credentials (assume-role, SSO, web identity, ``credential_process`` with an
    ``Expiration``) and renews them before they expire, for as long as the mount runs.
    Nothing here may read the credentials once and pass them on frozen.

    Without ``--addressing-style``, AWS gets virtual-hosted requests (what AWS wants; botocore
    still falls back to path-style where a bucket name cannot be a host name) and any other
    endpoint, from ``--endpoint-url`` or the AWS config/environment, gets path-style ones
    (what MinIO, Ceph and SeaweedFS serve without DNS set up for buckets).
    """
    core = botocore.session.get_session()
    parsers = core.get_component("response_parser_factory")
    parsers.set_parser_defaults(timestamp_parser=parse_timestamp)
    try:
        session = boto3.session.Session(
            profile_name=settings.profile, region_name=settings.region, botocore_session=core
        )
    except botocore.exceptions.ProfileNotFound as exc:
        raise UsageError(f"AWS profile not found: {settings.profile}") from exc

    def build(style: str) -> Any:
        config = make_boto_config(settings.connect_timeout, settings.read_timeout, pool, style)
        try:
            return session.client("s3", endpoint_url=settings.endpoint_url, config=config)
        except ValueError as exc:
            raise UsageError(f"invalid endpoint URL {settings.endpoint_url!r}: {exc}") from exc

    if settings.addressing_style:
        return build(settings.addressing_style)
    client = build("path" if settings.endpoint_url else "virtual")
    if not settings.endpoint_url and not is_aws_endpoint(client.meta.endpoint_url):
        client = build("path")  # an endpoint from AWS_ENDPOINT_URL or the config file
    return client


@dataclass(frozen=True)
class RequestArgs:
    """What every request of a kind carries besides its own parameters: who pays
    (``--requester-pays``) and, for object reads, the SSE-C key. The repr leaves the key out."""

    listing: dict[str, Any] = field(default_factory=dict)
    reading: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, settings: S3Settings) -> "RequestArgs":
        payer = {"RequestPayer": "requester"} if settings.requester_pays else {}
        sse_c: dict[str, Any] = {}
        if settings.sse_c_key is not None:
            # botocore base64-encodes the key and adds its MD5 (the ...-customer-key-MD5 header)
            sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": settings.sse_c_key.key}
        return cls(listing=payer, reading={**payer, **sse_c})


def store_factory(
    settings: S3Settings, pool: int, stats: Stats | None = None
) -> Callable[[str], "S3Store"]:
    """Stores for any bucket over one client (one connection pool), retrying as ``settings``
    say: the mount and ``prefetch s3://`` build their stores this one way."""
    client = make_client(settings, pool)
    retrier = Retrier(RetryPolicy(settings.retries, settings.retry_seconds), stats)
    args = RequestArgs.of(settings)
    lean = LeanGets.of(client, settings)
    return lambda bucket: S3Store(client, bucket, retrier, args, lean)


class LeanGets:
    """GETs of object bytes without boto3's request pipeline.

    For a small file boto3's machinery (parameter validation, endpoint rules, a dozen event
    handlers, response parsing) is most of the cost: ~1.5 ms of CPU per GET under the GIL,
    which bounds how fast a walker's files ahead can land (``rsync`` of small files). For a
    streamed chunk, urllib3's ``readinto`` reads each piece into a new ``bytes`` and copies
    it: every byte received was copied twice in Python's process. This
    sends the request botocore would send for ``get_object(Range=..., IfMatch=...)`` — the
    same URL and headers, signed by the client's own signer (so its refreshing credentials
    and signature version) — over :mod:`http.client`, one keep-alive connection per thread,
    with the client's connect and read timeouts. The answer gets the checks of
    :meth:`S3Store.get_range_into`; an error status becomes the ``ClientError`` boto3 would
    raise, so :func:`classify` maps it the one way.

    Only for path-style addressing, without an SSE-C key or a proxy (:meth:`of` returns None
    otherwise: boto3 computes virtual-hosted and access-point URLs by rules not worth
    restating).
    """

    def __init__(
        self,
        client: Any,
        endpoint_url: str,
        timeouts: tuple[float, float],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.client = client
        url = urllib.parse.urlsplit(endpoint_url)
        self.tls = tls
        self.host = url.hostname or ""
        self.port = url.port
        self.base = endpoint_url.rstrip("/")
        self.base_path = url.path.rstrip("/")
        self.connect_timeout, self.read_timeout = timeouts
        self._local = threading.local()

    @classmethod
    def of(cls, client: Any, settings: S3Settings) -> "LeanGets | None":
        config = client.meta.config
        style = (config.s3 or {}).get("addressing_style")
        if style != "path" or settings.sse_c_key is not None:
            return None
        if config.proxies or botocore.utils.get_environ_proxies(client.meta.endpoint_url):
            return None  # botocore would go through a proxy
        if not hasattr(client, "_request_signer"):
            return None  # a botocore without the signer this signs with: boto3's own path
        scheme = urllib.parse.urlsplit(client.meta.endpoint_url).scheme
        if scheme not in ("http", "https"):
            return None
        tls = None
        if scheme == "https":  # the client's own CA bundle (or none: verification turned off)
            verify = getattr(getattr(client._endpoint, "http_session", None), "_verify", None)
            if verify is None:
                return None
            tls = ssl.create_default_context(cafile=botocore.httpsession.get_cert_path(verify))
            if verify is False:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        timeouts = (settings.connect_timeout, settings.read_timeout)
        return cls(client, client.meta.endpoint_url, timeouts, tls)

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self.tls is not None:
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.connect_timeout, context=self.tls
                )
            else:
                conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.connect_timeout
                )
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self.read_timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _send(self, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """The response to a GET of ``path``. A kept-alive connection the server closed
        meanwhile fails before any answer: that one is sent again at once on a new
        connection (as urllib3 does), not counted as a failed attempt."""
        reused = getattr(self._local, "conn", None) is not None
        try:
            conn = self._connection()
            conn.request("GET", path, headers=headers)
            return conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                raise
        self._drop()
        conn = self._connection()
        conn.request("GET", path, headers=headers)
        return conn.getresponse()

    def _answer(
        self, bucket: str, key: str, headers: dict[str, str], query: str
    ) -> http.client.HTTPResponse:
        """The answer to a signed GET of ``key``, if 206; another status is raised as boto3
        would raise it (an error's connection is dropped)."""
        path = f"{self.base_path}/{bucket}/{urllib.parse.quote(key, safe='/~')}"
        if query:
            path += "?" + query
        request = AWSRequest("GET", self.base + path[len(self.base_path) :], headers=headers)
        self.client._request_signer.sign("GetObject", request)
        try:
            resp = self._send(path, dict(request.headers.items()))
            if resp.status != 206:
                body = resp.read(64 * 1024)
                if resp.status < 300:
                    raise BadResponse(f"expected 206 Partial Content, got {resp.status}")
                raise _client_error(resp.status, body)
        except BaseException:
            self._drop()
            raise
        return resp

    def get_into(
        self,
        bucket: str,
        key: str,
        size: int,
        etag: str,
        headers: dict[str, str],
        query: str,
        sink: Sink,
    ) -> None:
        """One attempt at the whole object (``size`` bytes) into ``sink``, in one piece
        (nothing reaches the sink from an attempt that fails: a retry starts over)."""
        buffer = memoryview(bytearray(size))
        with self.ranged(bucket, key, headers, query, 0, size, size, etag) as readinto:
            filled = 0
            while filled < size:
                n = readinto(buffer[filled:])
                if not n:
                    raise Transient(f"short body: {filled} of {size} bytes", "short_body")
                filled += n
        sink(0, buffer)

    @contextlib.contextmanager
    def ranged(
        self,
        bucket: str,
        key: str,
        headers: dict[str, str],
        query: str,
        start: int,
        end: int,
        size: int,
        etag: str,
    ) -> Iterator[Callable[[memoryview], int]]:
        """The body of bytes ``[start, end)`` of ``key`` as its ``readinto``, once the answer
        is shown to be those bytes of that version. The connection is kept for the next GET
        only if the caller read the body to its end."""
        resp = self._answer(bucket, key, headers, query)
        try:
            _check_range(resp, start, end, size, etag)
            yield resp.readinto
            if resp.length or resp.read(1):
                raise BadResponse(f"body longer than the {end - start} bytes asked for")
        except BaseException:
            self._drop()
            raise
        if resp.will_close:
            self._drop()


def _client_error(status: int, body: bytes) -> botocore.exceptions.ClientError:
    """What boto3 raises for an error answer (code and message from S3's XML, if any)."""
    fields = {
        name.decode(): value.decode(errors="replace") for name, value in ERROR_FIELD.findall(body)
    }
    error = {"Code": fields.get("Code", str(status)), "Message": fields.get("Message", "")}
    response: Any = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, "GetObject")


def _check_range(
    resp: http.client.HTTPResponse, start: int, end: int, size: int, etag: str
) -> None:
    """A lean GET's answer: 206 for exactly ``bytes start-(end-1)/size``, that many bytes
    long, of the version asked for (``If-Match`` says so already; an ETag answered, if any,
    must agree)."""
    expected = f"bytes {start}-{end - 1}/{size}"
    got = resp.getheader("Content-Range")
    if got != expected:
        raise BadResponse(f"Content-Range {got!r}, expected {expected!r}")
    if resp.length != end - start:
        raise BadResponse(f"Content-Length {resp.length}, expected {end - start}")
    answered = resp.getheader("ETag")
    if etag and answered and answered.strip('"') != etag.strip('"'):
        raise ObjectChanged(f"ETag {answered} answered, {etag} asked for")


def _check_partial(resp: dict[str, Any], what: str, start: int, end: int, size: int) -> None:
    """A ranged GET's answer must be 206 with exactly the ``Content-Range`` asked for: a
    server that ignores ``Range`` would send the whole object for every chunk."""
    status = resp["ResponseMetadata"]["HTTPStatusCode"]
    expected = f"bytes {start}-{end - 1}/{size}"
    if status != 206:
        raise BadResponse(f"{what}: expected 206 Partial Content, got {status}")
    if resp.get("ContentRange") != expected:
        got = resp.get("ContentRange")
        raise BadResponse(f"{what}: Content-Range {got!r}, expected {expected!r}")


class S3Store:
    """Blocking S3 access for one bucket. Thread-safe (boto3 clients are)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        retrier: Retrier,
        args: RequestArgs | None = None,
        lean: LeanGets | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.retrier = retrier
        self.args = args or RequestArgs()
        self.lean = lean

    def with_retries(self, policy: RetryPolicy) -> "S3Store":
        """The same client and bucket under another retry policy (the mount's first check)."""
        retrier = Retrier(policy, self.retrier.stats)
        return S3Store(self.client, self.bucket, retrier, self.args, self.lean)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def attempt() -> T:
            try:
                return fn(*args, **kwargs)
            except RangefsError:
                raise
            except Exception as exc:
                mapped = classify(exc, what)
                if mapped is exc:
                    raise
                raise mapped from exc

        return self.retrier.call(what, attempt)

    def _holds_any(self, what: str, listing: Callable[..., Any], prefix: str, *fields: str) -> bool:
        """One page of at most one entry under ``prefix``: raises unless the bucket can be
        listed; True if the page has any of ``fields``."""
        page = self._call(
            f"{what} s3://{self.bucket}/{prefix}",
            listing,
            Bucket=self.bucket,
            Prefix=prefix,
            MaxKeys=1,
            **self.args.listing,
        )
        return any(page.get(name) for name in fields)

    def _object_args(self, key: str, etag: str, version_id: str) -> dict[str, Any]:
        """What names one object version on a HEAD or GET: the key, ``If-Match`` on the ETag,
        the versionId when given, and the reading arguments (payer, SSE-C key)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, **self.args.reading}
        if etag:
            args["IfMatch"] = etag
        if version_id:
            args["VersionId"] = version_id
        return args

    def check_access(self, prefix: str) -> bool:
        """Proves the bucket exists and can be listed (a mount must not succeed otherwise);
        True if ``prefix`` holds at least one key."""
        return self._holds_any("list", self.client.list_objects_v2, prefix, "KeyCount", "Contents")

    def _pages(self, prefix: str, **extra: Any) -> Iterator[dict[str, Any]]:
        """Every ListObjectsV2 page under ``prefix``, past the 1000-key limit."""
        what = f"list s3://{self.bucket}/{prefix}"
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": prefix,
            **extra,
            **self.args.listing,
        }
        while True:
            page = self._call(what, self.client.list_objects_v2, **kwargs)
            yield page
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page.get("NextContinuationToken")
            if not kwargs["ContinuationToken"]:
                raise BadResponse(f"{what}: truncated listing without a continuation token")

    @staticmethod
    def _info(item: dict[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            key=item["Key"],
            size=int(item.get("Size", 0)),
            etag=str(item.get("ETag", "")),
            mtime=item["LastModified"].timestamp(),
        )

    def list_dir_pages(self, prefix: str) -> Iterator[Listing]:
        """One directory level, a ListObjectsV2 page (up to 1000 keys) at a time, so a caller
        can store each page before the next is asked for; the key equal to ``prefix`` (the
        directory marker) is the page's ``marker``."""
        for page in self._pages(prefix, Delimiter="/"):
            objects: list[ObjectInfo] = []
            marker: ObjectInfo | None = None
            for item in page.get("Contents", []):
                if item["Key"] == prefix:
                    marker = self._info(item)
                else:
                    objects.append(self._info(item))
            prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            yield Listing(objects, prefixes, marker)

    def list_all(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix`` (no delimiter), for prefetching a whole tree."""
        return [
            self._info(item)
            for page in self._pages(prefix)
            for item in page.get("Contents", [])
            if not item["Key"].endswith("/")
        ]

    # -- versions (--version-at; see rangefs.remote.versions.VersionedStore) --------

    def versioning(self) -> str:
        """``Enabled``, ``Suspended``, or ``""`` for a bucket never versioned."""
        resp = self._call(
            f"get versioning of s3://{self.bucket}",
            self.client.get_bucket_versioning,
            Bucket=self.bucket,
            **self.args.listing,
        )
        return str(resp.get("Status") or "")

    def check_versions_access(self, prefix: str) -> bool:
        return self._holds_any(
            "list versions", self.client.list_object_versions, prefix, "Versions", "DeleteMarkers"
        )

    def list_versions(
        self, prefix: str, delimiter: bool = True
    ) -> tuple[list[VersionEntry], list[str]]:
        """Every version and delete marker under ``prefix`` (ListObjectVersions, all pages:
        KeyMarker + VersionIdMarker), in listing order, and the common prefixes."""
        what = f"list versions s3://{self.bucket}/{prefix}"
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, **self.args.listing}
        if delimiter:
            kwargs["Delimiter"] = "/"
        entries: list[VersionEntry] = []
        prefixes: list[str] = []
        while True:
            page = self._call(what, self.client.list_object_versions, **kwargs)
            for item in page.get("Versions", []):
                entries.append(
                    VersionEntry(
                        key=item["Key"],
                        version_id=str(item.get("VersionId") or "null"),
                        mtime=item["LastModified"].timestamp(),
                        is_latest=bool(item.get("IsLatest")),
                        size=int(item.get("Size", 0)),
                        etag=str(item.get("ETag", "")),
                    )
                )
            for item in page.get("DeleteMarkers", []):
                entries.append(
                    VersionEntry(
                        key=item["Key"],
                        version_id=str(item.get("VersionId") or "null"),
                        mtime=item["LastModified"].timestamp(),
                        deleted=True,
                        is_latest=bool(item.get("IsLatest")),
                    )
                )
            prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes") or [])
            if not page.get("IsTruncated"):
                return entries, prefixes
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker", "")
            if not kwargs["KeyMarker"]:
                raise BadResponse(f"{what}: truncated listing without a key marker")

    def head(self, key: str) -> ObjectInfo:
        resp = self._call(
            f"head s3://{self.bucket}/{key}",
            self.client.head_object,
            **self._object_args(key, "", ""),
        )
        return ObjectInfo(
            key=key,
            size=int(resp["ContentLength"]),
            etag=str(resp.get("ETag", "")),
            mtime=resp["LastModified"].timestamp(),
        )

    def facts(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        """HEAD with ``PartNumber=1``: part 1's length (the whole object for a single-part
        upload) and the encryption headers."""
        resp = self._call(
            f"head s3://{self.bucket}/{key} part 1",
            self.client.head_object,
            PartNumber=1,
            **self._object_args(key, etag, version_id),
        )
        parts = int(resp["PartsCount"]) if "PartsCount" in resp else None
        return ObjectFacts(
            encryption=str(resp.get("ServerSideEncryption", "")),
            customer_key=bool(resp.get("SSECustomerAlgorithm")),
            first_part=int(resp["ContentLength"]) if parts else None,
            parts=parts,
        )

    def checksums(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        """HEAD with ``ChecksumMode=ENABLED``: the object's additional checksum and its
        encryption; for a composite checksum, the parts from GetObjectAttributes too."""
        resp = self._call(
            f"head s3://{self.bucket}/{key} checksum",
            self.client.head_object,
            ChecksumMode="ENABLED",
            **self._object_args(key, etag, version_id),
        )
        checksum = None
        for name, algorithm in CHECKSUM_FIELDS.items():
            if resp.get(name):
                checksum = Checksum(algorithm, str(resp[name]), str(resp.get("ChecksumType", "")))
                break
        if checksum is not None and (checksum.type == "COMPOSITE" or "-" in checksum.value):
            checksum = self._with_parts(key, etag, version_id, checksum)
        return ObjectFacts(
            encryption=str(resp.get("ServerSideEncryption", "")),
            customer_key=bool(resp.get("SSECustomerAlgorithm")),
            checksum=checksum,
        )

    def _with_parts(self, key: str, etag: str, version_id: str, checksum: Checksum) -> Checksum:
        """``checksum`` with its parts' sizes and checksums (GetObjectAttributes, a call per
        1000 parts), or as it was if S3 does not list them (a missing permission, a server
        without the call): the part layout is then assumed from the part count."""
        args = self._object_args(key, "", version_id)
        field = next(f for f, a in CHECKSUM_FIELDS.items() if a == checksum.algorithm)
        sizes: list[int] = []
        values: list[str] = []
        marker = 0
        while True:
            try:
                resp = self._call(
                    f"get attributes s3://{self.bucket}/{key}",
                    self.client.get_object_attributes,
                    ObjectAttributes=["ETag", "ObjectParts"],
                    MaxParts=MAX_PARTS_PAGE,
                    PartNumberMarker=marker,
                    **args,
                )
            except (AccessDenied, NotFound, RemoteError) as exc:
                log.info(
                    "s3://%s/%s: no part list (%s): parts assumed uniform", self.bucket, key, exc
                )
                return checksum
            if etag and str(resp.get("ETag", "")).strip('"') != etag.strip('"'):
                raise ObjectChanged(f"get attributes s3://{self.bucket}/{key}: ETag changed")
            page = resp.get("ObjectParts") or {}
            for part in page.get("Parts") or []:
                sizes.append(int(part["Size"]))
                values.append(str(part.get(field, "")))
            if not page.get("IsTruncated") or not page.get("NextPartNumberMarker"):
                break
            marker = int(page["NextPartNumberMarker"])
        return Checksum(
            checksum.algorithm,
            checksum.value,
            checksum.type,
            tuple(sizes),
            tuple(values) if all(values) else (),
        )

    def get_range(
        self, key: str, start: int, end: int, etag: str, size: int, version_id: str = ""
    ) -> bytes:
        """Bytes ``[start, end)`` of the object version ``etag`` (and ``version_id``, sent as
        ``VersionId=``, when given), checked before returning.

        The status must be 206 with the exact ``Content-Range`` asked for and the body must
        have the asked length; a body cut short is retried, a server that ignores ``Range``
        is an error (it would send the whole object for every chunk).
        """
        rng = byte_range(start, end)
        what = f"GET s3://{self.bucket}/{key} {rng}"

        def fetch() -> bytes:
            resp = self.client.get_object(Range=rng, **self._object_args(key, etag, version_id))
            body = resp["Body"]
            try:
                _check_partial(resp, what, start, end, size)
                data = body.read()
            finally:
                body.close()
            if len(data) != end - start:
                raise Transient(f"short body: {len(data)} of {end - start} bytes", "short_body")
            md5 = resp["ResponseMetadata"].get("HTTPHeaders", {}).get("content-md5")
            if md5 and base64.b64encode(hashlib.md5(data).digest()).decode() != md5:
                raise Transient("body does not match Content-MD5", "checksum")
            return data

        return self._call(what, fetch)

    def get_range_into(self, get: RangeGet, sink: Sink) -> None:
        """Streams ``get``'s bytes to ``sink`` through one reused buffer (RAM per GET in
        flight: one piece). The checks are :meth:`get_range`'s; a retry after a body cut
        short asks only for what did not arrive."""
        key, start, end, etag, size = get.key, get.start, get.end, get.etag, get.size
        version_id, align = get.version_id, get.align
        what = f"GET s3://{self.bucket}/{key} {byte_range(start, end)}"
        if self.lean is not None and start == 0 and 0 < end == size <= LEAN_GET_MAX:
            self._get_whole_lean(what, key, size, etag, sink, version_id)
            return
        buffer = memoryview(bytearray(max(align, RECEIVE_PIECE - RECEIVE_PIECE % align)))
        done = start

        def attempt() -> None:
            nonlocal done
            with self._body(what, key, done, end, size, etag, version_id) as readinto:
                while done < end:
                    want = min(len(buffer), end - done)
                    filled = 0
                    try:
                        while filled < want:
                            n = readinto(buffer[filled:want])
                            if not n:
                                raise Transient(
                                    f"short body: {done + filled - start} of {end - start} bytes",
                                    "short_body",
                                )
                            filled += n
                    except BaseException:
                        whole = filled - filled % align
                        if whole:
                            sink(done, buffer[:whole])
                            done += whole
                        raise
                    sink(done, buffer[:filled])
                    done += filled

        self._call(what, attempt)

    @contextlib.contextmanager
    def _body(
        self, what: str, key: str, start: int, end: int, size: int, etag: str, version_id: str
    ) -> Iterator[Callable[[memoryview], int]]:
        """The checked body of one ranged GET, as its ``readinto``: by :class:`LeanGets`
        when it can (no copy per piece), else boto3's."""
        if self.lean is not None:
            headers, query = self._lean_request(start, end, etag, version_id)
            try:
                with self.lean.ranged(
                    self.bucket, key, headers, query, start, end, size, etag
                ) as readinto:
                    yield readinto
            except (BadResponse, ObjectChanged) as exc:
                raise type(exc)(f"{what}: {exc}") from None
            return
        rng = byte_range(start, end)
        resp = self.client.get_object(Range=rng, **self._object_args(key, etag, version_id))
        body = resp["Body"]
        try:
            _check_partial(resp, what, start, end, size)
            yield body.readinto
        finally:
            body.close()

    def _lean_request(
        self, start: int, end: int, etag: str, version_id: str
    ) -> tuple[dict[str, str], str]:
        """The headers and query of a lean GET: what :meth:`_object_args` gives boto3."""
        headers = {"Range": byte_range(start, end)}
        if etag:
            headers["If-Match"] = etag
        if self.args.reading.get("RequestPayer"):
            headers["x-amz-request-payer"] = "requester"
        query = f"versionId={urllib.parse.quote(version_id, safe='~')}" if version_id else ""
        return headers, query

    def _get_whole_lean(
        self, what: str, key: str, size: int, etag: str, sink: Sink, version_id: str
    ) -> None:
        """A whole small object by :class:`LeanGets` in one piece: the request
        :meth:`get_range_into` sends, its checks, its retries."""
        assert self.lean is not None
        lean = self.lean
        headers, query = self._lean_request(0, size, etag, version_id)

        def attempt() -> None:
            try:
                lean.get_into(self.bucket, key, size, etag, headers, query, sink)
            except (BadResponse, ObjectChanged) as exc:
                raise type(exc)(f"{what}: {exc}") from None

        self._call(what, attempt)
