"""The SQLite state store: meta, seen events, profiles, timers, the action outbox and dead letters."""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import inspect
import json
import os
import sqlite3
import tempfile
import threading
import urllib.parse
from collections.abc import Collection, Iterable, Iterator
from datetime import date, datetime, timezone
from typing import Any

import orjson

from rulecrm.errors import StateError, StorageError
from rulecrm.masking import mask_personal

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

SCHEMA_VERSION = 1
DELIVERS = "delivers"  # meta key: this state's actions go to channels (`run`, `replay --dispatch`)
LAST_RELOAD = "last_reload"  # meta key: the rules a runner last loaded or refused, and their diagnostics
FORMAT = "rulecrm-state"
_PAGE = 1000  # rows fetched per query by the iterators (keyset pagination)
_WAITING_PAGE = 64  # the dispatcher's reads of waiting actions: it stops once a channel is full
_CHANNEL_OF = "coalesce(json_extract(json, '$.channel'), '')"  # as in the index actions_waiting
# `PRAGMA quick_check` reads every page (about 0.15 s for a 190 MB state on a warm cache): states
# larger than this are checked by their header and schema only when opened.
QUICK_CHECK_LIMIT = 1 << 30
# SQLite keeps this much of the state in memory per open store (its default, 2 MB, makes a state of a
# million customers read the same index pages from the OS again and again).
PAGE_CACHE_KIB = 64 * 1024

Timer = tuple[str, float, int, int, str, dict]
_TABLES = {"meta", "events", "profiles", "timers", "actions", "dead_letters", "dead_letters_resolved",
           "sqlite_sequence"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_customer ON events (customer_id, at);
CREATE TABLE IF NOT EXISTS profiles (
    customer_id TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS timers (
    key TEXT PRIMARY KEY,
    due REAL NOT NULL,
    rule_index INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    customer_id TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due, rule_index, seq, key);
CREATE INDEX IF NOT EXISTS timers_customer ON timers (customer_id);
CREATE TABLE IF NOT EXISTS actions (
    key TEXT PRIMARY KEY,
    customer_id TEXT,
    rule TEXT,
    status TEXT,
    due_at TEXT,
    sent_at TEXT,
    reported INTEGER NOT NULL DEFAULT 0,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_customer ON actions (customer_id);
CREATE INDEX IF NOT EXISTS actions_status ON actions (status);
-- the dispatcher reads the waiting actions of one channel at a time (`iter_waiting_actions`)
CREATE INDEX IF NOT EXISTS actions_waiting ON actions (status, coalesce(json_extract(json, '$.channel'), ''));
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    raw TEXT NOT NULL,
    error TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_line ON dead_letters (source, line_no);
CREATE TABLE IF NOT EXISTS dead_letters_resolved (
    source TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    raw_sha256 TEXT NOT NULL,
    how TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (source, line_no, raw_sha256)
);
"""


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _dumps(value: Any) -> str:
    # orjson writes the same JSON as the standard encoder below, several times faster (profiles and
    # timers are written per customer per step); what it refuses (e.g. a lone surrogate) takes the slow path
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=_json_default)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _text(value: Any) -> str | None:
    """A column value for an ISO timestamp field: datetimes are written as ISO 8601 strings."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class _DamagedValue(Exception):
    """A value read back from the state is not what rulecrm wrote (not JSON text)."""


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        raise _DamagedValue(f"a stored value is {type(text).__name__}, not JSON text")
    try:
        return orjson.loads(text)  # several times faster than json; the engine reads a profile per event
    except ValueError as exc:
        raise _DamagedValue(f"a stored value is not JSON: {exc}") from None


# -- storage faults ----------------------------------------------------------------------------

# OSError is not among them: an OSError inside a transaction comes from another file (--out, a source)
_FAULT_TYPES = (sqlite3.OperationalError, sqlite3.DatabaseError, _DamagedValue)
_SQLITE_KINDS = {13: "full", 8: "readonly", 10: "io", 26: "not-a-state", 11: "damaged", 5: "busy", 6: "busy",
                 14: "cannot-open"}
_MESSAGE_KINDS = (  # for Pythons whose sqlite3 errors carry no error code
    ("database or disk is full", "full"), ("readonly database", "readonly"), ("disk I/O error", "io"),
    ("file is not a database", "not-a-state"), ("malformed", "damaged"), ("database is locked", "busy"),
    ("unable to open database file", "cannot-open"), ("Could not decode to UTF-8", "damaged"),
    ("no such table", "damaged"), ("no such column", "damaged"),
)
_ERRNO_KINDS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EFBIG: "full", errno.EROFS: "readonly",
                errno.EACCES: "readonly", errno.EPERM: "readonly", errno.EIO: "io"}


def _is_fault(exc: BaseException) -> bool:
    """A fault of the storage, not a bug: IntegrityError, ProgrammingError and the like stay as they are."""
    if isinstance(exc, sqlite3.DatabaseError):
        return type(exc) in (sqlite3.DatabaseError, sqlite3.OperationalError)
    return isinstance(exc, _DamagedValue)


def storage_fault(path: str, exc: BaseException, *, temporary: bool = False) -> StorageError:
    """The StorageError for a fault met while using the state `path`: one line, naming the file and what to do."""
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    label = f"temporary state {path}" if temporary else f"state {path}"
    if isinstance(exc, _DamagedValue):
        kind = "damaged"
    elif isinstance(exc, OSError):
        kind = _ERRNO_KINDS.get(exc.errno, "cannot-open")
        detail = exc.strerror or detail
    else:
        code = getattr(exc, "sqlite_errorcode", None)
        kind = _SQLITE_KINDS.get(code & 0xFF) if isinstance(code, int) else None
        if kind is None:
            kind = next((k for text, k in _MESSAGE_KINDS if text in str(exc)), "other")
    if kind in ("cannot-open", "readonly") and path != ":memory:":
        # SQLite says "unable to open" when it cannot create the -wal/-shm files beside the state
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            detail = f"directory {directory} does not exist"
        elif _read_only_file_system(directory):
            kind, detail = "readonly", "read-only file system"
        elif kind == "cannot-open" and not os.access(directory, os.W_OK):
            kind, detail = "readonly", f"no permission to write in {directory}"
    where = " (or set TMPDIR to a larger disk)" if temporary else ""
    message = {
        "full": f"cannot write {label}: the disk is full ({detail}); free some space{where} and run the "
                "command again (work committed before is kept)",
        "readonly": f"{label} is read-only ({detail}); rulecrm writes to it and beside it (its -wal and -shm "
                    "files): make the file and its directory writable, or copy the state to a writable place",
        "io": f"cannot read or write {label}: {detail} (the disk may be failing or full, or a file size limit "
              "was reached); check the disk and free some space, then run again (work committed before is kept)",
        "not-a-state": f"{path} is not a rulecrm state file, or its header is damaged ({detail}); use another "
                       "--state, or restore it from a backup",
        "damaged": f"{label} is damaged ({detail}); restore it from a backup, or use another --state",
        "busy": f"{label} is busy: another process holds its write lock ({detail}); try again",
        "cannot-open": f"cannot open {label} ({detail}); check that its directory exists and is writable",
    }.get(kind, f"cannot use {label}: {detail}")
    return StorageError(message, kind=kind, path=path)


def _read_only_file_system(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def storage_errors(path: str):
    """For code reading the state with its own connection (explain): SQLite's faults, and stored text
    that is not JSON, raised inside the block become a StorageError."""
    try:
        yield
    except json.JSONDecodeError as exc:
        raise storage_fault(path, _DamagedValue(f"a stored value is not JSON: {exc}")) from None
    except _FAULT_TYPES as exc:
        if not _is_fault(exc):
            raise
        raise storage_fault(path, exc) from None


def _guarded(method):
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def guarded_rows(self, *args, **kwargs):
            try:
                yield from method(self, *args, **kwargs)
            except _FAULT_TYPES as exc:
                if not _is_fault(exc):
                    raise
                raise self._fault(exc) from None
        return guarded_rows

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except _FAULT_TYPES as exc:
            if not _is_fault(exc):
                raise
            raise self._fault(exc) from None
    return guarded


def _guard_storage_faults(cls):
    """Wrap every public method of the class (those added later too) with `_guarded`."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member) and name not in ("transaction", "close", "lock"):
            setattr(cls, name, _guarded(member))
    return cls


@functools.cache
def _expected_columns() -> dict[str, frozenset]:
    """Each table of the schema with its columns, as SQLite itself reads `_SCHEMA`."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.executescript(_SCHEMA)
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: frozenset(row[1] for row in db.execute(f"PRAGMA table_info({t})")) for t in tables}


# -- the runner lock ---------------------------------------------------------------------------
#
# The lock is a flock() on a descriptor of the state file itself, so every name of the file (another
# path, a symlink, a hard link) meets the same lock, and the kernel drops it when the process dies,
# `kill -9` included. On Linux flock() locks are independent of the POSIX locks SQLite takes on the
# same file. One caveat shapes the code below: closing *any* descriptor of a file drops every POSIX
# lock the process holds on it, SQLite's included. So the lock is taken before SQLite opens the file,
# and a descriptor is closed only once no store of this process has the file open (until then it is
# unlocked and set aside).

_REGISTRY = threading.RLock()
_OPEN: dict[tuple[int, int], int] = {}  # file identity -> stores of this process that have it open
_LOCKED: set[tuple[int, int]] = set()  # identities whose runner lock this process holds
_SET_ASIDE: dict[tuple[int, int], list[int]] = {}  # descriptors to close once the file is closed


def _identity(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _register(identity) -> None:
    if identity is not None:
        with _REGISTRY:
            _OPEN[identity] = _OPEN.get(identity, 0) + 1


def _unregister(identity) -> None:
    if identity is None:
        return
    with _REGISTRY:
        left = _OPEN.get(identity, 0) - 1
        if left > 0:
            _OPEN[identity] = left
            return
        _OPEN.pop(identity, None)
        descriptors = _SET_ASIDE.pop(identity, [])
    for fd in descriptors:
        os.close(fd)


def _drop_descriptor(identity, fd: int) -> None:
    with _REGISTRY:
        if _OPEN.get(identity):
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            _SET_ASIDE.setdefault(identity, []).append(fd)
        else:
            os.close(fd)


def _take_lock(path: str) -> tuple[int, tuple[int, int]]:
    """Open the state file (creating it) and flock it; StateError naming the holder when it is taken."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise storage_fault(path, exc) from None
    status = os.fstat(fd)
    identity = (status.st_dev, status.st_ino)
    with _REGISTRY:
        holder = os.getpid() if identity in _LOCKED else None
        if holder is None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                _drop_descriptor(identity, fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StorageError(f"cannot lock state {path} ({exc.strerror}); keep the state on a local "
                                       "file system", kind="cannot-open", path=path) from None
                holder = _flock_holder(identity) or "unknown"
            else:
                _LOCKED.add(identity)
                return fd, identity
        else:
            _drop_descriptor(identity, fd)
    pid = "" if holder == "unknown" else f" (pid {holder})"
    raise StateError(f"state {path} is in use by another rulecrm process{pid}; stop it or use another --state")


def _release_lock(identity, fd: int | None) -> None:
    if fd is None:
        return
    with _REGISTRY:
        _LOCKED.discard(identity)
        _drop_descriptor(identity, fd)


def _flock_holder(identity: tuple[int, int]) -> int | None:
    """The pid holding a flock() on the file, from /proc/locks (Linux); None when it cannot be told."""
    dev, ino = identity
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    same_inode = []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF"
                if len(fields) < 6 or fields[1] != "FLOCK":
                    continue
                if fields[5] == wanted:
                    return int(fields[4])
                if fields[5].rsplit(":", 1)[-1] == str(ino):  # a stacked file system shows another device
                    same_inode.append(int(fields[4]))
    except (OSError, ValueError):
        return None
    return same_inode[0] if len(set(same_inode)) == 1 else None


def _readonly_uri(path: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


@_guard_storage_faults
class Store:
    """The state of one rulecrm deployment in one SQLite file; every write runs in a transaction.

    Every public method turns storage faults (disk full, read-only, damaged file, I/O error) into a
    StorageError naming the file; `transaction()` rolls back on them, so committed work is kept.
    """

    keeps_state = True  # profiles, timers and actions written here can be read back
    unindexed: tuple[str, ...] = ()  # indexes of the schema this kind of store does without

    def __init__(self, connection: sqlite3.Connection, path: str, *, temporary: bool = False):
        self._db = connection
        self.path = path
        self._temporary = temporary
        self._depth = 0
        self._lock_fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file, while open

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike | None, *, lock: bool = False, readonly: bool = False) -> Store:
        """Open a state file, creating it if needed; ':memory:' for tests; None: a temporary file.

        The file is checked first: an SQLite database, structurally sound (`PRAGMA quick_check` up to
        QUICK_CHECK_LIMIT), a rulecrm state with the expected tables and a schema version this rulecrm
        understands. `lock` takes the runner lock (see `lock`) before SQLite reads the file.
        `readonly` reads an existing state and writes nothing to it.
        """
        temporary = path is None
        if temporary:
            try:
                fd, path = tempfile.mkstemp(prefix="rulecrm-state-", suffix=".db")
            except OSError as exc:
                raise storage_fault(os.path.join(tempfile.gettempdir(), "rulecrm-state-*.db"), exc,
                                    temporary=True) from None
            os.close(fd)
        path = os.fspath(path)
        lock_fd = identity = None
        if lock and path != ":memory:" and fcntl is not None:
            lock_fd, identity = _take_lock(path)
        try:
            target = _readonly_uri(path) if readonly and path != ":memory:" else path
            connection = sqlite3.connect(target, isolation_level=None, uri=target != path)
        except sqlite3.Error as exc:
            _release_lock(identity, lock_fd)
            raise storage_fault(path, exc, temporary=temporary) from None
        store = cls(connection, path, temporary=temporary)
        store._lock_fd = lock_fd
        store._identity = identity or (None if path == ":memory:" else _identity(path))
        _register(store._identity)
        try:
            store._prepare(readonly=readonly)
        except BaseException as exc:
            store.close()
            if isinstance(exc, _FAULT_TYPES) and _is_fault(exc):
                raise store._fault(exc) from None
            raise
        return store

    def _prepare(self, *, readonly: bool = False) -> None:
        self._db.execute("PRAGMA busy_timeout = 5000")
        tables = self._table_names()  # reads the header and the schema: "file is not a database" comes here
        if not tables and readonly:
            raise StateError(f"state {self.path} is empty: no replay or run has written to it yet")
        if tables:
            self._check_version(unmarked_ok=tables <= _TABLES)
            self._check_pages()
        if readonly:
            self._check_schema(all_tables=False)
            return
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip() and not self._unindexed(statement):
                    self._db.execute(statement)
            if self.get_meta("format") is None:
                self.set_meta("format", FORMAT)
                self.set_meta("schema_version", SCHEMA_VERSION)
        self._check_version()
        self._check_schema(all_tables=True)

    def _unindexed(self, statement: str) -> bool:
        """Whether `statement` creates an index this store does without (see `unindexed`)."""
        return any(f"INDEX IF NOT EXISTS {index} ON" in statement for index in self.unindexed)

    def _check_version(self, *, unmarked_ok: bool = False) -> None:
        rows = {}
        if "meta" in self._table_names():
            rows = dict(self._db.execute("SELECT key, value FROM meta WHERE key IN ('format', 'schema_version')"))
        if not rows and unmarked_ok:
            return  # only our tables, being created by another process: _prepare writes the markers
        if _loads(rows.get("format", "null")) != FORMAT:
            raise StateError(f"{self.path} is an SQLite database but not a rulecrm state; use another --state")
        version = _loads(rows.get("schema_version", "0"))
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise StateError(
                f"state {self.path} has schema version {version}, newer than this rulecrm understands "
                f"({SCHEMA_VERSION}); upgrade rulecrm or use another --state"
            )

    def _check_pages(self) -> None:
        """Every page's structure (`PRAGMA quick_check`), unless the state is too large to read at each open."""
        if self.path != ":memory:":
            size = sum(os.path.getsize(self.path + suffix) for suffix in ("", "-wal")
                       if os.path.exists(self.path + suffix))
            if size > QUICK_CHECK_LIMIT:
                return
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(1)")]
        if problems != ["ok"]:
            lines = [line for line in str(problems[0]).splitlines() if line.strip() and not line.startswith("***")]
            first = " ".join((lines or ["quick_check failed"])[0].split())[:200]
            raise StorageError(f"state {self.path} is damaged ({first}); restore it from a backup, or use another "
                               "--state", kind="damaged", path=self.path)

    def _check_schema(self, *, all_tables: bool) -> None:
        """Every table of the schema has its columns (a read-only open accepts a table not created yet)."""
        tables = self._table_names()
        for table, columns in _expected_columns().items():
            if table not in tables and not all_tables:
                continue
            found = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if not columns <= found:
                missing = ", ".join(sorted(columns - found))
                raise StorageError(f"state {self.path} is damaged or was not written by rulecrm (table {table} "
                                   f"lacks {missing}); restore it from a backup, or use another --state",
                                   kind="damaged", path=self.path)

    def _table_names(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _fault(self, exc: BaseException) -> StorageError:
        return storage_fault(self.path, exc, temporary=self._temporary)

    def close(self) -> None:
        """Close the database, release the runner lock and remove a temporary state."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):  # a fault was reported where it happened: close anyway
                if self._db.in_transaction:
                    self._db.rollback()
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
            _unregister(self._identity)
        if self._lock_fd is not None:
            _release_lock(self._identity, self._lock_fd)
            self._lock_fd = None
        if self._temporary:
            for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def lock(self) -> None:
        """Take the exclusive runner lock: a flock() on the state file itself, whatever name reaches it.

        Raises StateError naming the holder's pid when another process (or another store of this
        process) holds it. `Store.open(path, lock=True)` takes it before SQLite reads the file, which
        is what a runner wants: a second runner must not even read a state through another name.
        """
        if self._lock_fd is not None or self.path == ":memory:" or fcntl is None:
            return
        self._lock_fd, identity = _take_lock(self.path)
        if self._identity is None:
            self._identity = identity
            _register(identity)

    @contextlib.contextmanager
    def transaction(self):
        """All or nothing: commits on success, rolls back on any exception; nested use joins the outer one.

        A storage fault (raised by a store method, or by the block's own use of the database) comes out
        as a StorageError once the transaction is rolled back.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if _is_fault(exc):
                raise self._fault(exc) from None
            raise
        self._depth = 1
        try:
            yield self
        except BaseException as exc:
            self._depth = 0
            self._rollback()
            if isinstance(exc, _FAULT_TYPES) and _is_fault(exc):
                raise self._fault(exc) from None
            raise
        self._depth = 0
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()  # a failed COMMIT (disk full) can leave the transaction open
            if _is_fault(exc):
                raise self._fault(exc) from None
            raise

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # the error that led here is the one to report
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    # -- meta ----------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else _loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, _dumps(value)))

    # -- events --------------------------------------------------------------------------

    def record_event(self, event_id: str, customer_id: str, at_epoch: float, type: str, json_text: str) -> bool:
        """Remember an applied event; False when this id was recorded before (apply it once)."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO events (id, customer_id, at, type, json) VALUES (?, ?, ?, ?, ?)",
                (event_id, customer_id, at_epoch, type, json_text),
            )
            return cursor.rowcount == 1

    def event_text(self, event_id: str) -> str | None:
        """What `record_event` stored for this id (the event's JSON; a fingerprint in a scratch store)."""
        row = self._db.execute("SELECT json FROM events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else row[0]

    def has_event(self, event_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None

    def count_events(self) -> int:
        return self._db.execute("SELECT count(*) FROM events").fetchone()[0]

    # -- profiles ------------------------------------------------------------------------

    def get_profile(self, customer_id: str) -> dict | None:
        row = self._db.execute("SELECT json FROM profiles WHERE customer_id = ?", (customer_id,)).fetchone()
        return None if row is None else _loads(row[0])

    def put_profiles(self, items: Iterable[tuple[str, dict]]) -> None:
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO profiles (customer_id, json) VALUES (?, ?)",
                ((customer_id, _dumps(profile)) for customer_id, profile in items),
            )

    def iter_profiles(self) -> Iterator[tuple[str, dict]]:
        """Every profile in customer id order, fetched in pages."""
        for customer_id, text in self._pages("SELECT customer_id, json FROM profiles", ("customer_id",)):
            yield customer_id, _loads(text)

    # -- timers --------------------------------------------------------------------------

    def put_timers(self, rows: Iterable[Timer]) -> None:
        """Insert or replace timers by key: (key, due_epoch, rule_index, seq, customer_id, payload)."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO timers (key, due, rule_index, seq, customer_id, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                ((key, due, rule_index, seq, customer_id, _dumps(payload))
                 for key, due, rule_index, seq, customer_id, payload in rows),
            )

    def delete_timers(self, keys: Iterable[str]) -> None:
        with self.transaction():
            self._db.executemany("DELETE FROM timers WHERE key = ?", ((key,) for key in keys))

    def iter_timers(self, *, until: float | None = None) -> Iterator[Timer]:
        """Timers ordered by (due, rule_index, seq); with `until`, only those due at or before it."""
        where = ("due <= ?", (until,)) if until is not None else None
        sql = "SELECT key, due, rule_index, seq, customer_id, payload FROM timers"
        for key, due, rule_index, seq, customer_id, payload in self._pages(
            sql, ("due", "rule_index", "seq", "key"), where=where
        ):
            yield key, due, rule_index, seq, customer_id, _loads(payload)

    def timers_for(self, customer_id: str) -> list[Timer]:
        rows = self._db.execute(
            "SELECT key, due, rule_index, seq, customer_id, payload FROM timers WHERE customer_id = ? "
            "ORDER BY due, rule_index, seq, key",
            (customer_id,),
        )
        return [(key, due, rule_index, seq, cid, _loads(payload)) for key, due, rule_index, seq, cid, payload in rows]

    def timers_after(self, order: tuple[float, int, int] | None, limit: int) -> list[Timer]:
        """The first `limit` timers in firing order (due, rule_index, seq) after `order` (None: from the start)."""
        sql = "SELECT key, due, rule_index, seq, customer_id, payload FROM timers"
        params: tuple = ()
        if order is not None:
            sql += " WHERE (due, rule_index, seq) > (?, ?, ?)"
            params = tuple(order)
        rows = self._db.execute(sql + " ORDER BY due, rule_index, seq LIMIT ?", (*params, limit))
        return [(key, due, rule_index, seq, cid, _loads(payload)) for key, due, rule_index, seq, cid, payload in rows]

    def next_timer_due(self) -> float | None:
        """The earliest due time of any timer, or None."""
        return self._db.execute("SELECT min(due) FROM timers").fetchone()[0]

    # -- outbox --------------------------------------------------------------------------

    def put_actions(self, actions: Iterable[dict]) -> None:
        """Insert or update actions by their "key"; the whole dict is kept as JSON (datetimes as ISO text)."""

        def rows():
            for action in actions:
                if not action.get("key"):
                    raise ValueError(f"an action needs a non-empty 'key': {action!r}")
                reported = bool(action.get("reported", False))
                yield (
                    action["key"],
                    action.get("customer_id"),
                    action.get("rule"),
                    action.get("status"),
                    _text(action.get("due_at")),
                    _text(action.get("sent_at")),
                    int(reported),
                    _dumps({**action, "reported": reported}),
                )

        with self.transaction():
            self._db.executemany(
                "INSERT INTO actions (key, customer_id, rule, status, due_at, sent_at, reported, json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "customer_id = excluded.customer_id, rule = excluded.rule, status = excluded.status, "
                "due_at = excluded.due_at, sent_at = excluded.sent_at, reported = excluded.reported, "
                "json = excluded.json",
                rows(),
            )

    def put_outbox(self, actions: Iterable[Any]) -> None:
        """Write the engine's actions (objects with `to_dict()`; see `put_actions`)."""
        self.put_actions(action.to_dict() for action in actions)

    def has_action(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM actions WHERE key = ?", (key,)).fetchone() is not None

    def get_action(self, key: str) -> dict | None:
        row = self._db.execute("SELECT json FROM actions WHERE key = ?", (key,)).fetchone()
        return None if row is None else _loads(row[0])

    def iter_actions(
        self, *, customer_id: str | None = None, status: str | None = None, reported: bool | None = None,
    ) -> Iterator[dict]:
        """Actions in the order they were first written, optionally filtered."""
        clauses, params = [], []
        for column, value in (("customer_id", customer_id), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if reported is not None:
            clauses.append("reported = ?")
            params.append(int(reported))
        where = (" AND ".join(clauses), tuple(params)) if clauses else None
        for (text,) in self._pages("SELECT json FROM actions", ("rowid",), where=where):
            yield _loads(text)

    def iter_waiting_actions(
        self, status: str, channel: str, *, skip_keys: Collection[str] = (),
    ) -> Iterator[tuple[str | None, Any, str]]:
        """(customer_id, next_attempt, stored text) of `channel`'s actions with `status`, in the order
        they were first written, not decoded: the dispatcher reads these at every step and decodes only
        the actions it hands over (`action_from_text`). Keys in `skip_keys` (the sends in flight) are
        passed over. Read through the `actions_waiting` index a page at a time, so a caller that stops
        early reads little, however long the backlog.

        The sends in flight are the oldest waiting actions, so they head every read: SQLite leaves
        them out (a JSON list of their keys, made into a table once per read) rather than returning
        each one's text and `next_attempt` for Python to drop, which took about half of the main
        thread of a runner that had fallen behind."""
        skipping = ""
        skip: tuple = ()
        if skip_keys:
            skipping = " AND key NOT IN (SELECT value FROM json_each(?))"
            skip = (orjson.dumps(list(skip_keys)).decode(),)
        after = 0
        while True:
            rows = self._db.execute(
                "SELECT rowid, customer_id, json_extract(json, '$.next_attempt'), json FROM actions "
                f"WHERE status = ? AND {_CHANNEL_OF} = ? AND rowid > ?{skipping} ORDER BY rowid LIMIT {_WAITING_PAGE}",
                (status, channel, after, *skip)).fetchall()
            for _rowid, customer_id, next_attempt, text in rows:
                yield customer_id, next_attempt, text
            if len(rows) < _WAITING_PAGE:
                return
            after = rows[-1][0]

    def waiting_channels(self, status: str) -> set[str]:
        """The channels ('' for none) of the actions with `status` (read once at start and at each reload)."""
        return {row[0] for row in self._db.execute(
            f"SELECT DISTINCT {_CHANNEL_OF} FROM actions WHERE status = ?", (status,))}

    def action_from_text(self, text: str) -> dict:
        """An action's stored text (from `iter_waiting_actions`) as the dict `iter_actions` yields."""
        return _loads(text)

    def mark_reported(self, keys: Iterable[str]) -> None:
        """Flag actions as written to the output, so a later replay does not output them again."""
        with self.transaction():
            self._db.executemany(
                "UPDATE actions SET reported = 1, json = json_set(json, '$.reported', json('true')) WHERE key = ?",
                ((key,) for key in keys),
            )

    # -- dead letters --------------------------------------------------------------------

    def add_dead_letter(self, *, source: str, line_no: int, raw: str, error: str) -> int | None:
        """Keep a rejected input line; the same line of the same source is kept once (its error refreshed).

        None: this very line was fixed and re-ingested, or removed on purpose, before (a second
        replay of the same file must not bring it back).
        """
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        error = mask_personal(error)  # `raw` stays as it came, so it can be fixed; the error is for people
        with self.transaction():
            if self._db.execute(
                "SELECT 1 FROM dead_letters_resolved WHERE source = ? AND line_no = ? AND raw_sha256 = ?",
                (source, line_no, _sha256(raw)),
            ).fetchone() is not None:
                return None
            row = self._db.execute(
                "SELECT id FROM dead_letters WHERE source = ? AND line_no = ? AND raw = ?", (source, line_no, raw)
            ).fetchone()
            if row is not None:
                self._db.execute("UPDATE dead_letters SET error = ?, at = ? WHERE id = ?", (error, now, row[0]))
                return row[0]
            cursor = self._db.execute(
                "INSERT INTO dead_letters (source, line_no, raw, error, at) VALUES (?, ?, ?, ?, ?)",
                (source, line_no, raw, error, now),
            )
            return cursor.lastrowid

    def iter_dead_letters(self) -> Iterator[dict]:
        """Every dead letter in the order it was added: {id, source, line_no, raw, error, at}."""
        sql = "SELECT id, source, line_no, raw, error, at FROM dead_letters"
        for id_, source, line_no, raw, error, at in self._pages(sql, ("id",)):
            yield {"id": id_, "source": source, "line_no": line_no, "raw": raw, "error": error, "at": at}

    def resolve_dead_letter(self, id_: int, *, how: str) -> bool:
        """Take a dead letter out of the store for good ("retried" or "removed"), remembering its line
        so that reading the same source again does not add it back. False: no such dead letter."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.transaction():
            row = self._db.execute("SELECT source, line_no, raw FROM dead_letters WHERE id = ?", (id_,)).fetchone()
            if row is None:
                return False
            source, line_no, raw = row
            self._db.execute(
                "INSERT OR REPLACE INTO dead_letters_resolved (source, line_no, raw_sha256, how, at) "
                "VALUES (?, ?, ?, ?, ?)", (source, line_no, _sha256(raw), how, now),
            )
            self._db.execute("DELETE FROM dead_letters WHERE id = ?", (id_,))
            return True

    # -- helpers -------------------------------------------------------------------------

    def _pages(self, select: str, order: tuple[str, ...], *, where=None) -> Iterator[tuple]:
        """Rows of `select` ordered by the unique `order` columns, fetched one page per query.

        Keyset pagination keeps memory bounded and stays correct when rows are written between pages.
        """
        columns = ", ".join(order)
        select = select.replace("SELECT ", f"SELECT {columns}, ", 1)
        base_clause, base_params = where if where else ("", ())
        width = len(order)
        after: tuple | None = None
        while True:
            clauses = [base_clause] if base_clause else []
            params = list(base_params)
            if after is not None:
                clauses.append(f"({columns}) > ({', '.join('?' * width)})")
                params.extend(after)
            sql = select + (" WHERE " + " AND ".join(clauses) if clauses else "")
            rows = self._db.execute(f"{sql} ORDER BY {columns} LIMIT {_PAGE}", params).fetchall()
            for row in rows:
                yield row[width:]
            if len(rows) < _PAGE:
                return
            after = rows[-1][:width]
