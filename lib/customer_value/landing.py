"""The landing folder: raw files as a shop exports them, one folder per source, on any filesystem pyarrow
reaches (local, HDFS, S3, GCS, ABFS). Writers write a temporary `_`-prefixed file and rename it, so a reader
never sees half a file; readers skip names starting with `_` or `.`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow.fs as pafs

from customer_value.config import Config

SOURCES = ("users", "orders", "order_items", "events", "reviews")
EXTENSIONS = {"users": "csv", "orders": "csv", "order_items": "csv", "events": "jsonl", "reviews": "jsonl"}


def landing_uri(cfg: Config, landing: str | None = None) -> str:
    """The landing folder as an absolute path or URI; relative settings are under the storage root."""
    return under_root(cfg, landing or cfg.landing)


def under_root(cfg: Config, folder: str) -> str:
    """`folder` as an absolute path or URI: as given when it is one, else under the storage root."""
    if "://" in folder or os.path.isabs(folder):
        return folder.rstrip("/")
    root = cfg.storage.root
    root = root if "://" in root else os.path.abspath(root)
    return f"{root.rstrip('/')}/{folder}"


@dataclass(frozen=True)
class Location:
    fs: pafs.FileSystem
    path: str

    @staticmethod
    def of(uri: str) -> "Location":
        if "://" in uri and not uri.startswith("file://"):
            fs, path = pafs.FileSystem.from_uri(uri)
            return Location(fs, path)
        return Location(pafs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://")))

    def child(self, *parts: str) -> "Location":
        return Location(self.fs, "/".join([self.path.rstrip("/"), *parts]))

    def write_bytes(self, data: bytes) -> None:
        """Atomically (temp file + rename) write `data` here."""
        parent, name = self.path.rsplit("/", 1)
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/_tmp-{name}"
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        self.fs.move(tmp, self.path)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as src:
            return src.read()

    def list_files(self) -> list[str]:
        """Data files directly under this folder, sorted; temporary and hidden names skipped."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        except FileNotFoundError:
            return []
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith(("_", ".")))

    def clear(self) -> None:
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir_contents(self.path)
