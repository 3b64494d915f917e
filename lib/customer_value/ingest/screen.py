"""Whole-file checks before Spark reads a landing file: what makes a file unreadable as text lines.

Why before Spark: a corrupt or truncated gzip makes Spark's reader throw mid-job, failing the whole batch and
every good file in it; a UTF-16 or binary file would come through as lines of garbage. Each such file is
quarantined whole with its reason (quarantine.files, ops.ingest_log) and the rest of the batch goes on.
"""

from __future__ import annotations

import zlib

from customer_value.landing import Location

SNIFF_BYTES = 64 * 1024
CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
UTF8_BOM = b"\xef\xbb\xbf"
# bytes that never occur in text files (tab, newline, carriage return and form feed aside)
BINARY_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13))
BINARY_SHARE = 0.01


def _gunzip_head(stream) -> tuple[bytes, str | None]:
    """The first SNIFF_BYTES of a gzip stream's content, reading it to the end: (head, problem)."""
    head = b""
    inflate = zlib.decompressobj(wbits=31)
    try:
        while chunk := stream.read(CHUNK):
            while chunk:
                data = inflate.decompress(chunk)
                if len(head) < SNIFF_BYTES:
                    head += data[:SNIFF_BYTES - len(head)]
                chunk = inflate.unused_data            # a second gzip member follows
                if chunk:
                    inflate = zlib.decompressobj(wbits=31)
    except zlib.error:
        return head, "corrupt_gzip"
    if not inflate.eof:
        return head, "truncated_gzip"
    return head, None


def head_of(path: str) -> tuple[bytes, str | None]:
    """The file's first bytes as text readers see them (gzip content decompressed), and a gzip problem if any."""
    loc = Location.of(path)
    with loc.fs.open_input_stream(loc.path, compression=None) as f:   # the bytes as stored: we inflate
        magic = f.read(2)
        if magic == GZIP_MAGIC:
            if not path.endswith(".gz"):
                return b"", "compressed_without_gz_suffix"
            rest = _Prefixed(magic, f)
            return _gunzip_head(rest)
        if path.endswith(".gz"):
            return b"", "corrupt_gzip"
        return magic + f.read(SNIFF_BYTES - 2), None


class _Prefixed:
    """A stream with bytes already read put back in front."""

    def __init__(self, prefix: bytes, stream):
        self.prefix, self.stream = prefix, stream

    def read(self, n: int) -> bytes:
        if self.prefix:
            out, self.prefix = self.prefix, b""
            return out + self.stream.read(max(n - len(out), 0))
        return self.stream.read(n)


def screen(path: str) -> str | None:
    """Why the file cannot be ingested as text lines, or None: empty_file, corrupt_gzip, truncated_gzip,
    compressed_without_gz_suffix, unsupported_encoding:utf-16, binary_file."""
    head, problem = head_of(path)
    if problem:
        return problem
    if head.startswith(UTF16_BOMS):
        return "unsupported_encoding:utf-16"
    if not head.removeprefix(UTF8_BOM).strip():
        return "empty_file"
    if sum(head.count(bytes([b])) for b in BINARY_BYTES) > BINARY_SHARE * len(head):
        return "binary_file"
    return None
