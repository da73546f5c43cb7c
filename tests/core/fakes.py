"""An in-memory :class:`~rangefs.remote.store.ObjectStore` for the core tier: no server, no network.

It behaves like the S3 store where the core can tell the difference:

* ListObjectsV2 with delimiter ``/``: objects directly under a prefix, common prefixes, and
  the "directory marker" (the key equal to the prefix) in ``Listing.marker``;
* quoted MD5 ETags; ``get_range`` compares the If-Match ETag with the current object and
  raises :class:`~rangefs.errors.ObjectChanged` (the 412) when they differ, on its own;
* every attempt runs under :class:`rangefs.remote.retry.Retrier`, as
  :class:`rangefs.remote.s3.S3Store` does, so injected
  :class:`~rangefs.errors.Transient` failures are retried, counted in the stats,
  and turn into :class:`~rangefs.errors.RemoteError` when the budget is spent.

Its methods block and are called from worker threads (by :class:`~rangefs.remote.store.AsyncStore`),
so everything it shares is guarded by one lock and "hold this GET" is a
:class:`threading.Event` gate that the test releases; nothing here sleeps for timing.

Faults are injected per key and, optionally, per byte (``at``: the fault hits the GETs whose
range holds that byte), for ``times`` attempts (None: every attempt). :meth:`FakeStore.unplug`
makes the whole store unreachable: every attempt of every call fails with
:class:`~rangefs.errors.NoAnswer` (as a refused connection or a timeout) until
:meth:`FakeStore.plug`.

Versions: every put and delete is also kept in a per-key history (versionIds ``v1``, ``v2``...
in order, a delete adds a delete marker), listed by ``list_versions`` newest first as
ListObjectVersions does and read by ``get_range(..., version_id)``. ``versioning`` is what
GetBucketVersioning answers (``""`` until :meth:`FakeStore.enable_versioning`).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from awscrt import checksums as crt

from rangefs.errors import BadResponse, NoAnswer, NotFound, ObjectChanged, Transient
from rangefs.remote.retry import Retrier, RetryPolicy
from rangefs.remote.store import Checksum, Listing, ObjectFacts, ObjectInfo, RangeGet, Sink
from rangefs.remote.versions import VersionEntry
from rangefs.stats import Stats
from tests.support.patterns import pattern_bytes

# Tiny backoff: three attempts cost a few milliseconds, yet the code path is the real one.
FAST_RETRIES = RetryPolicy(
    attempts=3, max_seconds=5.0, initial_backoff=0.001, max_backoff=0.002, jitter=0.001
)
GATE_TIMEOUT = 10.0  # a held GET never outlives a broken test by more than this
FIRST_MTIME = 1_700_000_000.0

ErrorSpec = Exception | Callable[[], Exception]


PIECE = 256 * 1024  # what one streamed piece holds (the S3 store's receive buffer)


class _Cut(Transient):
    """A body cut short: what arrived before the cut."""

    def __init__(self, message: str, cause: str, partial: bytes) -> None:
        super().__init__(message, cause)
        self.partial = partial


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    etag: str
    mtime: float
    facts: ObjectFacts = field(default_factory=ObjectFacts)


@dataclass(frozen=True)
class StoredVersion:
    """One entry of a key's history: a version, or a delete marker (``obj`` None)."""

    version_id: str
    obj: StoredObject | None
    mtime: float


@dataclass(frozen=True)
class GetCall:
    """One ranged GET attempt as the store received it: bytes ``[start, end)``."""

    key: str
    start: int
    end: int
    etag: str
    version_id: str = ""


class Gate:
    """Holds the GETs it matches until :meth:`release`; :attr:`arrived` is set by the first."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()

    def _pass(self) -> None:
        self.arrived.set()
        if not self.released.wait(GATE_TIMEOUT):
            raise RuntimeError("test gate never released")  # not retried: fails the read


@dataclass
class _Fault:
    key: str  # an object key, or for "list" faults the listed prefix
    kind: str  # "error", "short", "cut", "flip", "hold", "list"
    at: int | None
    times: int | None
    error: ErrorSpec | None = None
    gate: Gate | None = None
    beyond: int | None = None  # only GETs starting at this byte or later
    passes: int = 0  # list faults: listing requests (pages) let through first
    hits: int = 0

    def matches(self, key: str, start: int | None, end: int | None) -> bool:
        if key != self.key or self.times == 0:
            return False
        if self.beyond is not None and (start is None or start < self.beyond):
            return False
        if self.at is None:
            return True
        return start is not None and end is not None and start <= self.at < end


@dataclass
class _State:
    objects: dict[str, StoredObject] = field(default_factory=dict)
    history: dict[str, list[StoredVersion]] = field(default_factory=dict)  # oldest first
    versioning: str = ""
    unplugged: bool = False
    faults: list[_Fault] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    gets: list[GetCall] = field(default_factory=list)
    bytes_sent: int = 0
    in_flight: int = 0  # streamed GET attempts running now
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    clock: itertools.count = field(default_factory=lambda: itertools.count())


def etag_of(data: bytes, part_size: int | None = None) -> str:
    """S3's ETag of ``data``: its MD5, or for a multipart upload in ``part_size`` parts
    ``md5(concat(part md5s))-N``."""
    if part_size is None:
        return f'"{hashlib.md5(data).hexdigest()}"'
    parts = range(0, len(data), part_size)
    digests = b"".join(hashlib.md5(data[i : i + part_size]).digest() for i in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def checksum_of(
    data: bytes,
    algorithm: str,
    part_size: int | None,
    composite: bool,
    list_parts: bool,
    terse: bool = False,
) -> Checksum:
    """The additional checksum S3 computes for an upload of ``data`` (in ``part_size``
    parts, if given), independently of rangefs's own arithmetic."""

    def raw(piece: bytes) -> bytes:
        if algorithm == "crc32":
            return zlib.crc32(piece).to_bytes(4, "big")
        if algorithm == "crc32c":
            return int(crt.crc32c(piece)).to_bytes(4, "big")
        if algorithm == "crc64nvme":
            return int(crt.crc64nvme(piece)).to_bytes(8, "big")
        return hashlib.new(algorithm, piece).digest()

    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode()

    if not composite:
        return Checksum(algorithm, b64(raw(data)), "FULL_OBJECT")
    step = part_size or max(1, len(data))
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    value = f"{b64(raw(b''.join(raw(p) for p in pieces)))}-{len(pieces)}"
    if terse:
        return Checksum(algorithm, value.split("-")[0])
    if not list_parts:
        return Checksum(algorithm, value, "COMPOSITE")
    sizes = tuple(len(p) for p in pieces)
    return Checksum(algorithm, value, "COMPOSITE", sizes, tuple(b64(raw(p)) for p in pieces))


class FakeStore:
    """One bucket held in memory. Thread-safe."""

    def __init__(
        self, bucket: str = "bucket", stats: Stats | None = None, policy: RetryPolicy = FAST_RETRIES
    ) -> None:
        self.bucket = bucket
        self.page_size = 1000  # keys and prefixes per listing page, as S3's MaxKeys default
        self._state = _State()
        self.retrier = Retrier(policy, stats)

    # -- what tests set up -------------------------------------------------------------------

    @property
    def stats(self) -> Stats:
        return self.retrier.stats

    def use_stats(self, stats: Stats) -> None:
        """Counts retries and errors in ``stats`` (a new core's) from now on."""
        self.retrier = Retrier(self.retrier.policy, stats)

    def put(
        self,
        key: str,
        data: bytes | None = None,
        *,
        size: int = 0,
        seed: int = 0,
        part_size: int | None = None,
        etag: str | None = None,
        encryption: str = "",
        checksum: str = "",
        composite: bool = False,
        list_parts: bool = True,
        terse: bool = False,
    ) -> bytes:
        """Stores ``data``, or a pattern object of ``size`` bytes; returns the bytes stored.

        The ETag is the MD5 of the bytes (as S3's for a single-part upload), or the multipart
        ETag of an upload in ``part_size`` parts, or ``etag`` as given, so putting other bytes
        changes it; every put gets a later mtime. ``checksum`` (``crc32c``, ``sha256``...):
        the additional checksum S3 keeps, full-object or ``composite`` over the parts, which
        ``list_parts`` says GetObjectAttributes lists (sizes and checksums); ``terse``: as
        moto says it, with no type and no ``-N`` after a composite value.
        """
        if data is None:
            data = pattern_bytes(0, size, seed)
        with self._state.lock:
            mtime = FIRST_MTIME + next(self._state.clock)
            parts = -(-len(data) // part_size) if part_size else None
            first = min(part_size, len(data)) if part_size else None
            facts = ObjectFacts(
                encryption,
                first_part=first,
                parts=parts,
                checksum=checksum_of(data, checksum, part_size, composite, list_parts, terse)
                if checksum
                else None,
            )
            obj = StoredObject(bytes(data), etag or etag_of(data, part_size), mtime, facts)
            self._state.objects[key] = obj
            self._record(key, obj, mtime)
        return data

    def delete(self, key: str) -> None:
        """Deletes ``key``; its history gets a delete marker."""
        with self._state.lock:
            del self._state.objects[key]
            self._record(key, None, FIRST_MTIME + next(self._state.clock))

    def _record(self, key: str, obj: StoredObject | None, mtime: float) -> None:
        count = sum(len(h) for h in self._state.history.values())
        entry = StoredVersion(f"v{count + 1}", obj, mtime)
        self._state.history.setdefault(key, []).append(entry)

    def enable_versioning(self, status: str = "Enabled") -> None:
        with self._state.lock:
            self._state.versioning = status

    def versions(self, key: str) -> list[StoredVersion]:
        """The history of ``key``, oldest first."""
        with self._state.lock:
            return list(self._state.history.get(key, []))

    def object(self, key: str) -> StoredObject:
        with self._state.lock:
            return self._state.objects[key]

    def fail(
        self, key: str, error: ErrorSpec, *, times: int | None = None, at: int | None = None
    ) -> None:
        """GETs of ``key`` raise ``error`` (an exception, or a factory of one)."""
        self._add(_Fault(key, "error", at, times, error=error))

    def fail_transient(
        self, key: str, *, times: int | None = None, at: int | None = None, cause: str = "http_503"
    ) -> None:
        """GETs of ``key`` fail as a 503 would: worth a retry."""
        self.fail(key, lambda: Transient(f"injected {cause}", cause), times=times, at=at)

    def fail_list(
        self, prefix: str, error: ErrorSpec, *, times: int | None = None, after: int = 0
    ) -> None:
        """Listings of ``prefix`` (e.g. ``"dir/"``, ``""`` for the root) raise ``error``, once
        ``after`` listing requests (pages) of it have passed."""
        self._add(_Fault(prefix, "list", None, times, error=error, passes=after))

    def hold_list(self, prefix: str) -> Gate:
        """Listings of ``prefix`` wait until the returned gate is released."""
        gate = Gate()
        self._add(_Fault(prefix, "list", None, None, gate=gate))
        return gate

    def short_body(self, key: str, *, times: int | None = None, at: int | None = None) -> None:
        """GETs of ``key`` return one byte less than asked, as if the store's own length
        check were missing: the reader must notice."""
        self._add(_Fault(key, "short", at, times))

    def cut_body(self, key: str, *, times: int | None = None, at: int | None = None) -> None:
        """GETs of ``key`` send half the body, then the connection breaks (a Transient)."""
        self._add(_Fault(key, "cut", at, times))

    def flip(self, key: str, at: int, *, times: int | None = None) -> None:
        """GETs of ``key`` whose range holds byte ``at`` return it inverted, lengths and
        everything else untouched (what only S3's proof can catch)."""
        self._add(_Fault(key, "flip", at, times))

    def hold(self, key: str, *, at: int | None = None, beyond: int | None = None) -> Gate:
        """GETs of ``key`` (those holding byte ``at``, or starting at ``beyond`` or later)
        wait until the returned gate is released."""
        gate = Gate()
        self._add(_Fault(key, "hold", at, None, gate=gate, beyond=beyond))
        return gate

    def unplug(self) -> None:
        """S3 cannot be reached: every attempt from now on gets no answer."""
        with self._state.lock:
            self._state.unplugged = True

    def plug(self) -> None:
        """S3 answers again."""
        with self._state.lock:
            self._state.unplugged = False

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    def _add(self, fault: _Fault) -> None:
        with self._state.lock:
            self._state.faults.append(fault)

    # -- what tests check --------------------------------------------------------------------

    @property
    def calls(self) -> Counter[str]:
        """Attempts per method name (``list_dir``, ``get_range``, ...)."""
        return self._state.calls

    @property
    def gets(self) -> list[GetCall]:
        """Every GET attempt so far, in order."""
        with self._state.lock:
            return list(self._state.gets)

    def get_count(self, key: str | None = None, start: int | None = None) -> int:
        """GET attempts, optionally of one key and one range start."""
        return sum(
            1
            for g in self.gets
            if (key is None or g.key == key) and (start is None or g.start == start)
        )

    def chunks_fetched(self, key: str, chunk_size: int) -> list[int]:
        """The chunk indexes of every GET of ``key``, in order (repeats included)."""
        return [g.start // chunk_size for g in self.gets if g.key == key]

    @property
    def bytes_sent(self) -> int:
        return self._state.bytes_sent

    @property
    def max_in_flight(self) -> int:
        """The most streamed GETs that were running at once."""
        return self._state.max_in_flight

    # -- the ObjectStore protocol ------------------------------------------------------------

    def with_retries(self, policy: RetryPolicy) -> FakeStore:
        clone = copy.copy(self)  # shares the objects, faults and counters
        clone.retrier = Retrier(policy, self.stats)
        return clone

    def _count(self, method: str) -> None:
        """Counts one attempt; no answer while unplugged."""
        with self._state.lock:
            self._state.calls[method] += 1
            unplugged = self._state.unplugged
        if unplugged:
            raise NoAnswer(f"{method}: connection refused (unplugged)", "connection")

    def check_access(self, prefix: str) -> bool:
        def attempt() -> bool:
            self._count("check_access")
            with self._state.lock:
                return any(k.startswith(prefix) for k in self._state.objects)

        return self.retrier.call(f"list s3://{self.bucket}/{prefix}", attempt)

    def _info(self, key: str, obj: StoredObject) -> ObjectInfo:
        return ObjectInfo(key, len(obj.data), obj.etag, obj.mtime)

    def _list_fault(self, method: str, prefix: str) -> None:
        """Counts a listing attempt and plays the listing fault of ``prefix``, if any."""
        self._count(method)
        with self._state.lock:
            faults = [f for f in self._state.faults if f.kind == "list"]
            fault = next((f for f in faults if f.key == prefix and f.times != 0), None)
            if fault is not None and fault.passes:
                fault.passes -= 1
                fault = None
            elif fault is not None and fault.times is not None:
                fault.times -= 1
        if fault is not None and fault.gate is not None:
            fault.gate._pass()
        elif fault is not None:
            assert fault.error is not None
            raise fault.error() if callable(fault.error) else fault.error

    def list_dir_pages(self, prefix: str) -> Iterator[Listing]:
        """As ListObjectsV2 with delimiter ``/``: keys and common prefixes in key order, at
        most :attr:`page_size` of them per page (each page one counted ``list_dir`` request,
        retried on its own); an empty level is one empty page."""
        with self._state.lock:
            items = sorted(self._state.objects.items())
        marker: ObjectInfo | None = None
        rows: list[ObjectInfo | str] = []
        for key, obj in items:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if rest == "":
                marker = self._info(key, obj)
                rows.append(marker)
            elif "/" in rest:
                sub = prefix + rest[: rest.index("/") + 1]
                if not rows or rows[-1] != sub:
                    rows.append(sub)
            else:
                rows.append(self._info(key, obj))
        for start in range(0, max(len(rows), 1), self.page_size):
            page = rows[start : start + self.page_size]

            def attempt(page: list[ObjectInfo | str] = page) -> Listing:
                self._list_fault("list_dir", prefix)
                objects = [r for r in page if isinstance(r, ObjectInfo) and r is not marker]
                prefixes = [r for r in page if isinstance(r, str)]
                return Listing(objects, prefixes, marker if marker in page else None)

            yield self.retrier.call(f"list s3://{self.bucket}/{prefix}", attempt)

    def list_all(self, prefix: str) -> list[ObjectInfo]:
        def attempt() -> list[ObjectInfo]:
            self._count("list_all")
            with self._state.lock:
                items = sorted(self._state.objects.items())
            return [
                self._info(k, o) for k, o in items if k.startswith(prefix) and not k.endswith("/")
            ]

        return self.retrier.call(f"list s3://{self.bucket}/{prefix}", attempt)

    def head(self, key: str) -> ObjectInfo:
        def attempt() -> ObjectInfo:
            self._count("head")
            with self._state.lock:
                obj = self._state.objects.get(key)
            if obj is None:
                raise NotFound(f"head s3://{self.bucket}/{key}: NoSuchKey")
            return self._info(key, obj)

        return self.retrier.call(f"head s3://{self.bucket}/{key}", attempt)

    def checksums(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        self._count("checksums")
        facts = self._facts(key, etag)
        return ObjectFacts(facts.encryption, facts.customer_key, checksum=facts.checksum)

    def facts(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        def attempt() -> ObjectFacts:
            self._count("facts")
            facts = self._facts(key, etag)
            return ObjectFacts(facts.encryption, facts.customer_key, facts.first_part, facts.parts)

        return self.retrier.call(f"head s3://{self.bucket}/{key} part 1", attempt)

    def _facts(self, key: str, etag: str) -> ObjectFacts:
        with self._state.lock:
            obj = self._state.objects.get(key)
        if obj is None:
            raise NotFound(f"head s3://{self.bucket}/{key}: NoSuchKey")
        if etag and obj.etag != etag:
            raise ObjectChanged(f"head s3://{self.bucket}/{key}: 412")
        return obj.facts

    def versioning(self) -> str:
        def attempt() -> str:
            self._count("versioning")
            with self._state.lock:
                return self._state.versioning

        return self.retrier.call(f"get versioning of s3://{self.bucket}", attempt)

    def check_versions_access(self, prefix: str) -> bool:
        self._list_fault("check_versions_access", prefix)
        with self._state.lock:
            return any(k.startswith(prefix) for k in self._state.history)

    def list_versions(
        self, prefix: str, delimiter: bool = True
    ) -> tuple[list[VersionEntry], list[str]]:
        """As ListObjectVersions: keys in order, each key's entries newest first."""

        def attempt() -> tuple[list[VersionEntry], list[str]]:
            self._list_fault("list_versions", prefix)
            entries: list[VersionEntry] = []
            prefixes: set[str] = set()
            with self._state.lock:
                history = sorted((k, list(h)) for k, h in self._state.history.items())
            for key, versions in history:
                if not key.startswith(prefix):
                    continue
                rest = key[len(prefix) :]
                if delimiter and "/" in rest:
                    prefixes.add(prefix + rest[: rest.index("/") + 1])
                    continue
                for i, v in enumerate(reversed(versions)):
                    entries.append(
                        VersionEntry(
                            key,
                            v.version_id,
                            v.mtime,
                            deleted=v.obj is None,
                            is_latest=i == 0,
                            size=len(v.obj.data) if v.obj else 0,
                            etag=v.obj.etag if v.obj else "",
                        )
                    )
            return entries, sorted(prefixes)

        return self.retrier.call(f"list versions s3://{self.bucket}/{prefix}", attempt)

    def get_range(
        self, key: str, start: int, end: int, etag: str, size: int, version_id: str = ""
    ) -> bytes:
        what = f"GET s3://{self.bucket}/{key} bytes={start}-{end - 1}"
        return self.retrier.call(
            what, lambda: self._get_once(what, key, start, end, etag, size, version_id)
        )

    def get_range_into(self, get: RangeGet, sink: Sink) -> None:
        """As the S3 store: pieces of :data:`PIECE` bytes; an attempt cut short delivers its
        whole ``align`` units and the retry asks for the rest only."""
        key, start, end, etag, size = get.key, get.start, get.end, get.etag, get.size
        version_id, align = get.version_id, get.align
        what = f"GET s3://{self.bucket}/{key} bytes={start}-{end - 1}"
        done = start

        def attempt() -> None:
            nonlocal done
            with self._state.lock:
                self._state.in_flight += 1
                self._state.max_in_flight = max(self._state.max_in_flight, self._state.in_flight)
            try:
                data = self._get_once(what, key, done, end, etag, size, version_id)
                if len(data) != end - done:
                    raise _Cut(f"{what}: short body", "short_body", data)
            except _Cut as cut:
                whole = len(cut.partial) - len(cut.partial) % align
                if whole:
                    sink(done, memoryview(cut.partial)[:whole])
                    done += whole
                raise
            finally:
                with self._state.lock:
                    self._state.in_flight -= 1
            view = memoryview(data)
            for offset in range(0, len(view), PIECE):
                sink(done, view[offset : offset + PIECE])
                done += len(view[offset : offset + PIECE])

        self.retrier.call(what, attempt)

    def _get_once(
        self, what: str, key: str, start: int, end: int, etag: str, size: int, version_id: str
    ) -> bytes:
        self._count("get_range")
        with self._state.lock:
            self._state.gets.append(GetCall(key, start, end, etag, version_id))
            faults = [
                f for f in self._state.faults if f.kind != "list" and f.matches(key, start, end)
            ]
            for f in faults:
                if f.times is not None:
                    f.times -= 1
                f.hits += 1
        for f in faults:
            if f.kind == "hold":
                assert f.gate is not None
                f.gate._pass()
        with self._state.lock:
            obj = self._state.objects.get(key)
            if version_id:
                found = [v for v in self._state.history.get(key, []) if v.version_id == version_id]
                obj = found[0].obj if found else None
        if obj is None:
            raise NotFound(f"{what}: NoSuchKey")
        if etag and etag != obj.etag:
            raise ObjectChanged(f"{what}: object changed (412 Precondition Failed)")
        if not 0 <= start < end <= len(obj.data) or size != len(obj.data):
            raise BadResponse(f"{what}: range not satisfiable for {len(obj.data)} bytes")
        data = obj.data[start:end]
        for f in faults:
            if f.kind == "error":
                assert f.error is not None
                raise f.error() if callable(f.error) else f.error
            if f.kind == "cut":
                half = len(data) // 2
                self._sent(half)
                raise _Cut(f"{what}: connection reset after {half} bytes", "cut", data[:half])
            if f.kind == "short":
                data = data[:-1]
            if f.kind == "flip":
                assert f.at is not None
                damaged = bytearray(data)
                damaged[f.at - start] ^= 0xFF
                data = bytes(damaged)
        self._sent(len(data))
        return data

    def _sent(self, n: int) -> None:
        with self._state.lock:
            self._state.bytes_sent += n
