"""The `jsonl` source: follows a JSONL file as it grows, across rotations, like `tail -F`."""

import hashlib
import os
import stat

from rulecrm.errors import StateError
from rulecrm.sources.contract import Item, SourceContext, SourceError, _undecodable, parse_line
from rulecrm.sources.reader import Rejected

HEAD_BYTES = 1024  # the start of a file, fingerprinted: tells the file read before from a reused inode
MAX_LINE = 16 * 1024 * 1024  # a longer line is rejected and skipped, not held in memory
_SIBLINGS_SCANNED = 1000  # directory entries looked at when searching for a file rotated while stopped
_OPEN_FLAGS = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)  # a FIFO at the path must not hang


class JsonlFollowSource:
    """Follows a JSONL file like `tail -F`; its position (file identity and byte offset) is kept in the store.

    Only complete lines (ending in a newline) are read. The file read is told apart by its identity
    (st_dev, st_ino) and a fingerprint of its first bytes:

    * the path names another file (renamed and re-created, deleted and re-created): the old file,
      still open, is read to its end until the writer has moved on (the new file has data), a last
      line without a newline included; then the new file is read from its start;
    * the file got smaller, or its first bytes changed (truncated in place, copytruncate): it is read
      again from its start;
    * the file is missing: it is waited for.

    Line numbers (in messages and dead letters) count within each file. An id-less event's synthetic
    id numbers it among all the lines read at this path (`seq`, continued across rotations), so equal
    lines in a new file are new events, and a restart gives every line the id it had.

    A restart resumes the stored file at the stored offset. When the path names another file by then
    (rotated while stopped), the stored file is looked for beside it (a name starting with the file's
    name, such as `events.jsonl.1` or `events.jsonl-20260301`, same identity and fingerprint) and its
    rest is read first; if it is gone, the lines it got after the last commit are not read, and the
    new file is read from its start. Lines between the position and a copytruncate are likewise lost
    (they are in the copy): the usual limit of copytruncate.
    """

    def __init__(self, path: str, context: SourceContext):
        if not path:
            raise SourceError("the jsonl source needs a file: --source jsonl:PATH")
        self.path = os.path.abspath(path)
        self.name = f"jsonl:{self.path}"
        self._context = context
        self._meta_key = f"source:{self.name}"
        self._file = None  # the open file being read (may no longer be the one at the path)
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) the position refers to
        self._offset = 0
        self._line_no = 0
        self._seq = 0
        self._head = (0, "")  # (length, sha256) of the file's first bytes read so far, up to HEAD_BYTES
        self._skipping = False  # inside an overlong line, discarding up to its newline
        self._legacy = False  # a position stored without identity: adopt the file at the path
        self._looked_for_rotated = False
        self._partial_at = None  # (offset, size) when an unfinished line was last met
        self._resumed_from = None  # the rotated file found beside the path at start-up, while it is read
        self._problem = None  # the last reason the path could not be opened, reported once

    # -- position ----------------------------------------------------------------------
    def open(self, store) -> None:
        saved = store.get_meta(self._meta_key) or {}
        try:
            self._offset = int(saved.get("offset", 0))
            self._line_no = int(saved.get("line_no", 0))
            self._seq = int(saved.get("seq", self._line_no))
            self._skipping = bool(saved.get("skipping", False))
            if saved.get("ino") is not None:
                self._ident = (int(saved["dev"]), int(saved["ino"]))
                self._head = (int(saved.get("head_len", 0)), str(saved.get("head", "")))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise StateError(f"the state's position for {self.name} is damaged: {str(saved)[:200]}") from None
        self._legacy = self._ident is None and self._offset > 0

    def commit(self, store) -> None:
        dev, ino = self._ident if self._ident is not None else (None, None)
        store.set_meta(self._meta_key, {
            "offset": self._offset, "line_no": self._line_no, "seq": self._seq, "dev": dev, "ino": ino,
            "head_len": self._head[0], "head": self._head[1], "skipping": self._skipping,
        })

    def committed(self) -> None:
        pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _start_over(self, ident) -> None:
        self._ident = ident
        self._offset = self._line_no = 0
        self._head = (0, "")
        self._skipping = False
        self._partial_at = None
        self._resumed_from = None

    # -- reading -----------------------------------------------------------------------
    def poll(self, limit: int) -> list[Item]:
        items: list[Item] = []
        try:
            self._poll(items, limit)
        except OSError as exc:  # an I/O error (a stale NFS handle, a failing disk): reopen at the position later
            self._report(f"cannot read it: {exc.strerror or exc}")
            self.close()
        return items

    def _poll(self, items: list[Item], limit: int) -> None:
        while len(items) < limit:
            if self._file is None and not self._open():
                break
            at_path = self._stat_path()
            rotated = at_path is None or (at_path.st_dev, at_path.st_ino) != self._ident
            if not rotated:
                self._check_truncated()
            # `at_path` was taken before this read: if the new file had data then, the writer had
            # already finished the old one, so this read gets all of it
            self._read(items, limit)
            self._problem = None
            if not rotated or len(items) >= limit:
                break
            if at_path is None or at_path.st_size == 0:
                break  # the writer may still append to the old file: keep it until the new one has data
            self._read_last_line(items)
            self._context.on_message(
                f"{self.name}: the file was replaced (rotated); read the old one to its end "
                f"(line {self._line_no}), now reading the new one from its start"
            )
            if self._resumed_from is not None:
                self._warn_skipped(at_path)
            self.close()
            self._start_over(None)

    def _stat_path(self):
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found if stat.S_ISREG(found.st_mode) else None

    def _open(self) -> bool:
        """Open the file the position refers to (or the file at the path); False while there is none."""
        handle = self._open_regular(self.path)
        if handle is None:
            if self._ident is not None and self._offset > 0 and not self._looked_for_rotated:
                self._looked_for_rotated = True  # once: the path may stay missing for long
                handle = self._find_rotated()
                if handle is not None:
                    self._file = handle
                    self._resumed_rotated(handle)
                    return True
            return False
        self._looked_for_rotated = False
        found = os.fstat(handle.fileno())
        ident = (found.st_dev, found.st_ino)
        if self._ident is None:
            if self._legacy and found.st_size < self._offset:
                self._start_over(ident)
            self._ident = ident  # a new file starts at 0; a legacy position is taken to mean this file
            self._legacy = False
        elif ident != self._ident or not self._same_start(handle, found.st_size):
            rotated = self._find_rotated()
            if rotated is not None:
                handle.close()
                handle = rotated
                self._resumed_rotated(rotated)
            else:
                if ident == self._ident and found.st_size < self._offset:
                    what = "got smaller"
                else:
                    what = "is not the one read before (replaced or rotated while stopped)"
                self._context.on_message(
                    f"{self.name}: the file {what}; reading it from its start (lines the old file got "
                    f"after line {self._line_no} were not read)"
                )
                self._start_over(ident)
        self._file = handle
        return True

    def _resumed_rotated(self, handle) -> None:
        self._resumed_from = handle.name
        self._context.on_message(
            f"{self.name}: the file was rotated while stopped; finishing {handle.name} from line "
            f"{self._line_no}, then the new file"
        )

    def _open_regular(self, path, *, report: bool = True):
        """The regular file at `path` opened for reading, or None (a problem at the path is reported once)."""
        problem = None
        try:
            handle = open(path, "rb", opener=lambda name, flags: os.open(name, flags | _OPEN_FLAGS))
        except FileNotFoundError:
            handle = None
        except IsADirectoryError:
            handle, problem = None, "it is not a regular file"
        except OSError as exc:
            handle, problem = None, f"cannot open it: {exc.strerror or exc}"
        if handle is not None and not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            handle.close()
            handle, problem = None, "it is not a regular file"
        if report and (problem is not None or handle is None):
            self._report(problem)  # a missing file is no problem, and ends one
        return handle

    def _report(self, problem: str | None) -> None:
        """Say once what keeps the file from being read (None: nothing, any more)."""
        if problem is not None and problem != self._problem:
            self._context.on_message(f"{self.name}: {problem}; waiting")
        self._problem = problem

    def _siblings(self):
        """(name, stat) of the regular files beside the path whose names start with its name (`events.jsonl.1`)."""
        directory, base = os.path.split(self.path)
        try:
            with os.scandir(directory) as entries:
                for n, entry in enumerate(entries):
                    if n >= _SIBLINGS_SCANNED:
                        return
                    if entry.name == base or not entry.name.startswith(base):
                        continue
                    try:
                        found = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(found.st_mode):
                        yield entry.path, found
        except OSError:
            return

    def _find_rotated(self):
        """The stored file, when it was renamed beside the path (`events.jsonl.1`, ...), opened; else None."""
        for path, found in self._siblings():
            if (found.st_dev, found.st_ino) != self._ident:
                continue
            handle = self._open_regular(path, report=False)
            if handle is None:
                continue
            now = os.fstat(handle.fileno())
            if (now.st_dev, now.st_ino) == self._ident and self._same_start(handle, now.st_size):
                return handle
            handle.close()
        return None

    def _warn_skipped(self, at_path) -> None:
        """After a file rotated while stopped: files rotated after it (so, never read) are named, not read."""
        finished = os.fstat(self._file.fileno())
        known = {(finished.st_dev, finished.st_ino), (at_path.st_dev, at_path.st_ino)}
        newer = sorted(os.path.basename(path) for path, found in self._siblings()
                       if found.st_mtime_ns > finished.st_mtime_ns and (found.st_dev, found.st_ino) not in known)
        if newer:
            self._context.on_message(
                f"{self.name}: rotated more than once while stopped: {', '.join(newer[:5])} "
                "(rotated after the file just finished) were not read"
            )

    def _same_start(self, handle, size: int) -> bool:
        """The file still holds the bytes read before: as long as the offset, same first bytes."""
        length, digest = self._head
        if size < self._offset:
            return False
        if length == 0:
            return True
        return hashlib.sha256(os.pread(handle.fileno(), length, 0)).hexdigest() == digest

    def _check_truncated(self) -> None:
        if self._same_start(self._file, os.fstat(self._file.fileno()).st_size):
            return
        self._context.on_message(f"{self.name}: the file shrank or was rewritten (truncated in place); "
                                 "reading it again from the start")
        self._start_over(self._ident)

    def _read(self, items: list[Item], limit: int) -> None:
        """Append the complete lines from the offset on, up to `limit` items in all."""
        stream = self._file
        size = os.fstat(stream.fileno()).st_size
        if size <= self._offset or (self._offset, size) == self._partial_at:
            return  # nothing new, or the same unfinished line as last time
        stream.seek(self._offset)
        while len(items) < limit:
            raw = stream.readline(MAX_LINE + 1)
            if not raw:
                break
            if self._skipping:  # the rest of an overlong line, already rejected
                self._offset += len(raw)
                self._skipping = not raw.endswith(b"\n")
                continue
            if not raw.endswith(b"\n"):
                if len(raw) <= MAX_LINE:
                    self._partial_at = (self._offset, size)  # not read again until the file grows
                    break  # a line still being written: wait for its newline
                self._offset += len(raw)
                self._skipping = True
                self._take(items, raw, complete=False)
                continue
            self._offset += len(raw)
            self._take(items, raw, complete=True)
        self._update_head()

    def _read_last_line(self, items: list[Item]) -> None:
        """The rest of a rotated-away file once its writer has moved on: a line without a newline is its last."""
        self._file.seek(self._offset)
        rest = self._file.read(MAX_LINE + 1)
        pieces = [piece + b"\n" for piece in rest.split(b"\n")]
        pieces[-1] = pieces[-1][:-1]  # what follows the last newline (often nothing)
        for raw in filter(None, pieces):
            self._offset += len(raw)
            if self._skipping:
                self._skipping = not raw.endswith(b"\n")
                continue
            self._take(items, raw, complete=len(raw) <= MAX_LINE)

    def _take(self, items: list[Item], raw: bytes, *, complete: bool) -> None:
        self._line_no += 1
        self._seq += 1
        line_no = self._line_no
        if not complete:
            preview = raw[:200].decode("utf-8", errors="backslashreplace")
            items.append((line_no, Rejected(line_no, preview + "...", f"line longer than {MAX_LINE} bytes; skipped")))
            return
        try:
            text = raw.decode("utf-8").rstrip("\r\n").lstrip("\ufeff")
        except UnicodeDecodeError as exc:
            text, error = _undecodable(raw.rstrip(b"\r\n"), exc)
            items.append((line_no, Rejected(line_no, text, error)))
            return
        if text.strip():
            items.append((line_no, parse_line(text, line_no, self._context.default_tz, self._seq)))

    def _update_head(self) -> None:
        length = min(self._offset, HEAD_BYTES)
        if length > self._head[0]:
            data = os.pread(self._file.fileno(), length, 0)
            self._head = (len(data), hashlib.sha256(data).hexdigest())
