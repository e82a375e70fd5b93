"""A state split into N partitions: one directory, one SQLite shard per partition, and a manifest.

A customer's profile, events, timers and actions live in exactly one shard, chosen by a hash of the
customer id that is the same on every machine, Python version and process, so that any worker of a
cluster can open the shard it is given:

    shard = int.from_bytes(blake2b(customer_id as UTF-8, digest_size=8), "big") % partitions

(UTF-8 with "surrogatepass", so an id holding a lone surrogate still hashes). The manifest names
this hash ("blake2b-64-mod"); a state whose manifest names another hash is refused rather than
read with the wrong routing.

Layout of DIR:
    DIR/manifest.json       {"format": "rulecrm-partitioned-state", "format_version": 1,
                             "partitions": N, "hash": "blake2b-64-mod"}
    DIR/shard-0000.db ...   one state file (state/store.py) per partition, numbered from 0 with
                            four digits at least (shard-10000.db past 9999 partitions)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile

import attrs

from rulecrm.errors import StateError, StorageError

MANIFEST = "manifest.json"
FORMAT = "rulecrm-partitioned-state"
FORMAT_VERSION = 1
HASH = "blake2b-64-mod"
_SHARD_NAME = "shard-{:04d}.db"


def shard_of(customer_id: str, partitions: int) -> int:
    """The partition holding `customer_id`: stable everywhere (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(customer_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def is_partitioned(path) -> bool:
    """A directory holding a manifest (what `PartitionedState.create` makes)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, MANIFEST))


def _check_count(partitions, what: str) -> int:
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise StateError(f"{what}: the number of partitions must be a whole number of at least 1, not {partitions!r}")
    return partitions


@attrs.frozen
class PartitionedState:
    """An existing partitioned state directory and its number of partitions (as its manifest says)."""

    path: str
    partitions: int

    @classmethod
    def create(cls, path, partitions: int) -> PartitionedState:
        """Make a new partitioned state in `path` (created, or an empty directory); a partitioned state
        already there with the same number of partitions is opened, one with another number refused."""
        path = os.fspath(path)
        partitions = _check_count(partitions, f"state {path}")
        if is_partitioned(path):
            return cls.open(path, partitions)
        if os.path.isdir(path) and os.listdir(path):
            raise StateError(f"state {path} is a directory that is neither empty nor a partitioned state; "
                             "use an empty or new directory for --state")
        if os.path.exists(path) and not os.path.isdir(path):
            raise StateError(f"state {path} is a file (a state with one partition); use a new directory "
                             "for a partitioned state")
        try:
            os.makedirs(path, exist_ok=True)
            _write_manifest(path, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                   "partitions": partitions, "hash": HASH})
        except OSError as exc:
            raise StorageError(f"cannot create partitioned state {path}: {exc.strerror or exc}; check that "
                               "its parent directory exists and is writable", kind="cannot-open", path=path) from None
        return cls(path, partitions)

    @classmethod
    def open(cls, path, partitions: int | None = None) -> PartitionedState:
        """An existing partitioned state; `partitions`, when given, must be the number it was made with."""
        path = os.fspath(path)
        if not is_partitioned(path):
            raise StateError(f"{path} is not a partitioned state (no {MANIFEST} in it)")
        found = _read_manifest(path)
        if partitions is not None and _check_count(partitions, f"state {path}") != found:
            raise StateError(f"state {path} has {found} partitions, not {partitions}: a customer's shard depends "
                             f"on the number, so it cannot change; use --partitions {found} (or leave it out), "
                             "or another --state")
        return cls(path, found)

    def shard_path(self, shard: int) -> str:
        """The state file of partition `shard` (0 ≤ shard < partitions), e.g. DIR/shard-0003.db."""
        if not 0 <= shard < self.partitions:
            raise ValueError(f"shard {shard} is outside 0..{self.partitions - 1}")
        return os.path.join(self.path, _SHARD_NAME.format(shard))

    def shard_paths(self) -> list[str]:
        return [self.shard_path(shard) for shard in range(self.partitions)]

    def shard_for(self, customer_id: str) -> int:
        return shard_of(customer_id, self.partitions)


def customer_state_file(state: str, customer: str) -> tuple[str, dict | None]:
    """The state file holding `customer`: `state` itself, or on a partitioned state (a directory) the
    customer's shard, with where it is ({path, shard, partitions, file})."""
    if not os.path.isdir(state):
        return state, None
    partitioned = PartitionedState.open(state)  # a directory without a manifest: one clear line
    shard = partitioned.shard_for(customer)
    file = partitioned.shard_path(shard)
    return file, {"path": state, "shard": shard, "partitions": partitioned.partitions, "file": file}


def _write_manifest(path: str, manifest: dict) -> None:
    """Written to a temporary file and renamed, so a reader never sees half a manifest."""
    fd, temporary = tempfile.mkstemp(prefix=".manifest-", dir=path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, os.path.join(path, MANIFEST))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read_manifest(path: str) -> int:
    """The number of partitions the manifest states, once its format, version and hash are known ones."""
    manifest_path = os.path.join(path, MANIFEST)
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except OSError as exc:
        raise StorageError(f"cannot read {manifest_path}: {exc.strerror or exc}", kind="cannot-open",
                           path=manifest_path) from None
    except ValueError as exc:
        raise StorageError(f"{manifest_path} is damaged (not JSON: {exc}); restore it from a backup",
                           kind="damaged", path=manifest_path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StorageError(f"{manifest_path} is damaged or not a rulecrm manifest (format is not {FORMAT!r}); "
                           "restore it from a backup", kind="damaged", path=manifest_path)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise StateError(f"{manifest_path} has format version {version!r}, which this rulecrm does not understand "
                         f"({FORMAT_VERSION}); upgrade rulecrm or use another --state")
    if manifest.get("hash") != HASH:
        raise StateError(f"{manifest_path} routes customers with hash {manifest.get('hash')!r}, which this rulecrm "
                         f"does not know ({HASH}); upgrade rulecrm or use another --state")
    partitions = manifest.get("partitions")
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise StorageError(f"{manifest_path} is damaged (partitions is {partitions!r}); restore it from a backup",
                           kind="damaged", path=manifest_path)
    return partitions
