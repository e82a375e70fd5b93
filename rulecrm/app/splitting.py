"""The first phase of a partitioned replay: cut the input file into per-partition pieces.

The file is cut into byte ranges ("blocks") that one task each reads, in parallel on a cluster.
A line belongs to the block its first byte is in, so the blocks' lines are the file's lines, each
once, whatever the cut. A task sends each line of its block to the partition of its customer
(`rulecrm.state.partitioned.shard_of`) and writes it, raw, to a piece file per (block, partition)
with its line number within the block. The file's line numbers come back once every task has
said how many lines its block has: a line's number is the lines of the blocks before it plus its
number within its block.

A piece line is `<line number in the block>\\t<the raw line without its line ending>\\n`: input lines
never hold a "\\n", so a piece is read back line by line.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator

import attrs
import orjson

from rulecrm.state.partitioned import shard_of

MIN_BLOCK_BYTES = 1 << 20  # smaller blocks cost more in task overhead than they save
MAX_BLOCK_BYTES = 64 << 20  # a block's task reads it in one go on one worker
_BUFFERED_BYTES = 8 << 20  # piece lines held in memory by one task before they are appended to their files
_BOM = b"\xef\xbb\xbf"


@attrs.frozen
class Block:
    """Bytes [start, end) of the input, cut by `plan_blocks`; `index` orders the blocks."""

    index: int
    start: int
    end: int


@attrs.frozen
class BlockSplit:
    """What splitting one block found: how many lines start in it (blank ones included)."""

    index: int
    lines: int


def plan_blocks(path, *, parallelism: int = 1) -> list[Block]:
    """Blocks of at most MAX_BLOCK_BYTES, at least `parallelism` of them when the file is large enough
    for each to hold MIN_BLOCK_BYTES; an empty file has none."""
    size = os.path.getsize(path)
    if size == 0:
        return []
    count = max(parallelism, math.ceil(size / MAX_BLOCK_BYTES))
    count = max(1, min(count, math.ceil(size / MIN_BLOCK_BYTES)))
    step = math.ceil(size / count)
    return [Block(i, start, min(start + step, size)) for i, start in enumerate(range(0, size, step))]


def piece_path(pieces_dir: str, block: int, shard: int) -> str:
    return os.path.join(pieces_dir, f"block-{block:06d}-shard-{shard:04d}.lines")


def split_block(events_path, block: Block, partitions: int, pieces_dir: str) -> BlockSplit:
    """Write the lines that start in `block` to their partitions' pieces; count them."""
    pieces = _PieceWriter(pieces_dir, block.index)
    lines = 0
    with open(events_path, "rb") as stream:
        position = _first_line_start(stream, block.start)
        while position < block.end:
            line = stream.readline()
            if not line:
                break
            position += len(line)
            lines += 1
            text = line.rstrip(b"\r\n")  # as the reader strips a line's ending
            if lines == 1 and block.start == 0 and text.startswith(_BOM):
                text = text[len(_BOM):]  # the file's first line may carry a byte-order mark: the reader drops it
            if text.strip():
                pieces.add(shard_of_line(text, partitions), lines, text)
    pieces.close()
    return BlockSplit(block.index, lines)


def _first_line_start(stream, start: int) -> int:
    """Seek to the first line that starts at or after `start`; its offset."""
    if start == 0:
        return 0
    stream.seek(start - 1)
    if stream.read(1) == b"\n":
        return start
    stream.readline()  # the rest of a line that belongs to the block before
    return stream.tell()


def shard_of_line(text: bytes, partitions: int) -> int:
    """The partition of the line's customer; 0 for a line with no usable customer id, which is
    rejected there and kept as a dead letter with its line number."""
    customer_id = _customer_id(text)
    return 0 if customer_id is None else shard_of(customer_id, partitions)


def _customer_id(text: bytes) -> str | None:
    """The customer id as the event parser reads it (`rulecrm.events`): a string, or an integer in decimal."""
    try:
        value = orjson.loads(text).get("customer_id")
    except (orjson.JSONDecodeError, AttributeError):
        value = float("nan")  # not JSON to orjson, or not an object: ask the standard parser
    if isinstance(value, float):
        # orjson reads integers beyond 64 bits as floats, and refuses some lines the standard
        # parser accepts (an escaped lone surrogate); the event parser uses the standard one
        value = _customer_id_by_standard_json(text)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _customer_id_by_standard_json(text: bytes):
    try:
        obj = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj.get("customer_id") if isinstance(obj, dict) else None


class _PieceWriter:
    """Piece lines of one block, held in memory up to _BUFFERED_BYTES, then appended to their files
    (a file is open only while it is written, so many partitions need no more open files)."""

    def __init__(self, pieces_dir: str, block: int):
        self._dir = pieces_dir
        self._block = block
        self._buffers: dict[int, list[bytes]] = {}
        self._held = 0

    def add(self, shard: int, line_no: int, text: bytes) -> None:
        record = b"%d\t%s\n" % (line_no, text)
        self._buffers.setdefault(shard, []).append(record)
        self._held += len(record)
        if self._held >= _BUFFERED_BYTES:
            self._flush()

    def _flush(self) -> None:
        for shard, records in self._buffers.items():
            with open(piece_path(self._dir, self._block, shard), "ab") as out:
                out.writelines(records)
        self._buffers.clear()
        self._held = 0

    def close(self) -> None:
        self._flush()


def read_pieces(pieces_dir: str, blocks: list[tuple[int, int]], shard: int) -> Iterator[tuple[int, bytes]]:
    """(line number in the file, raw line) of one partition, in file order; `blocks` are
    (block index, lines before the block) in block order."""
    for index, lines_before in blocks:
        path = piece_path(pieces_dir, index, shard)
        if not os.path.exists(path):
            continue  # no line of this block belongs to the partition
        with open(path, "rb") as stream:
            for record in stream:
                number, _, text = record[:-1].partition(b"\t")
                yield lines_before + int(number), text
