"""Filesystem access by path or URI: local paths and ``file://`` are memory-mapped, any other scheme
(``s3://``, ``gs://``, ``hdfs://``, or an fsspec protocol) goes through pyarrow's filesystems, so jobs
run unchanged on a cluster."""
from __future__ import annotations

import mmap
import os
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs


LOCAL = pafs.LocalFileSystem()


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """``uri`` -> (filesystem, path within it). Plain paths are local and made absolute."""
    if "://" not in uri:
        return LOCAL, os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid:
        import fsspec  # optional: protocols pyarrow does not know natively
        protocol = urlparse(uri).scheme
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(protocol)))
        return fs, uri.split("://", 1)[1]


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def read_buffer(fs: pafs.FileSystem, path: str):
    """The file's bytes as a buffer: a read-only ``mmap`` for local files (nothing copied; pages are
    read on first touch), a ``pyarrow.Buffer`` otherwise. An empty file gives ``b""``."""
    if is_local(fs):
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    with fs.open_input_file(path) as f:
        return f.read_buffer()


def write_bytes_atomic(fs: pafs.FileSystem, path: str, write) -> None:
    """Write a file so that readers see all of it or nothing: ``write(stream)`` fills a temporary
    sibling, which is then moved into place (a single put on object stores)."""
    tmp = f"{os.path.dirname(path)}/_tmp-{os.path.basename(path)}"
    with fs.open_output_stream(tmp) as stream:
        write(stream)
    fs.move(tmp, path)
