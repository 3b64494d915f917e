"""Finding what to ingest: new landing files, their headers, and a batch id that a rerun reproduces."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass

import pyarrow.fs as pafs

from customer_value.landing import Location


@dataclass(frozen=True)
class LandingFile:
    source: str
    path: str  # as Spark reads it (absolute path or URI)
    size: int
    modified: int  # nanoseconds since the epoch


def list_landing(landing: str, sources: list[str]) -> list[LandingFile]:
    """Every data file under <landing>/<source>/ (temporary `_` and hidden `.` names skipped), sorted."""
    root = Location.of(landing)
    prefix = "" if isinstance(root.fs, pafs.LocalFileSystem) else landing.split("://", 1)[0] + "://"
    out = []
    for source in sources:
        folder = root.child(source)
        for path in folder.list_files():
            info = root.fs.get_file_info(path)
            out.append(LandingFile(source, prefix + path, info.size, info.mtime_ns or 0))
    return out


def batch_id(files: list[LandingFile]) -> str:
    """Same set of new files -> same id: a rerun after a crash replaces exactly the batch it left behind."""
    digest = hashlib.sha256("\n".join(sorted(f"{f.source}\t{f.path}\t{f.size}" for f in files)).encode())
    return "b" + digest.hexdigest()[:15]


def read_header(path: str) -> tuple[list[str] | None, str | None]:
    """A CSV file's header columns (a UTF-8 byte-order mark dropped; gzip content read), or (None, reason)
    when the file has no usable first line."""
    from customer_value.ingest.screen import UTF8_BOM, head_of

    head, problem = head_of(path)
    if problem:
        return None, problem
    head = head.removeprefix(UTF8_BOM)
    if not head.strip():
        return None, "empty_file"
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    text = first.decode("utf-8", errors="replace")
    columns = [c.strip() for c in next(csv.reader([text]))]
    return columns, None
