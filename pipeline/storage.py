"""Storage by path or URI: the one layer every reader and writer of checkpoints, shards, embeddings,
indexes and reports goes through.

Local paths and ``file://`` are memory-mapped; any other scheme (``s3://``, ``gs://``, ``hdfs://``,
or an fsspec protocol) goes through pyarrow's filesystems, so every job runs unchanged on a cluster.
Writes are atomic: a temporary sibling is filled, then moved into place (a single put on object
stores), so readers see a whole file or none.
"""
from __future__ import annotations

import mmap
import os
import posixpath
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

LOCAL = pafs.LocalFileSystem()
TMP_PREFIX = "_tmp-"    # temporary siblings of files being written
PART_PREFIX = "part-"   # parts of a table written piecewise (records, embeddings)


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


def join(uri: str, *parts: str) -> str:
    """``uri`` joined with ``parts`` by ``/``, keeping its scheme."""
    return posixpath.join(uri, *parts)


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def stamp(uri: str) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of a file, which changes when it is rewritten; ``None`` if it is missing."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    return None if info.type == pafs.FileType.NotFound else (info.mtime_ns or 0, info.size or 0)


def is_dir(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def make_dirs(uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


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


def read_bytes(uri: str) -> bytes:
    """A whole file's bytes, by path or URI."""
    fs, path = resolve(uri)
    return bytes(read_buffer(fs, path))


def write_bytes_atomic(fs: pafs.FileSystem, path: str, write) -> None:
    """Write a file so that readers see all of it or nothing: ``write(stream)`` fills a temporary
    sibling, which is then moved into place."""
    tmp = f"{posixpath.dirname(path)}/{TMP_PREFIX}{posixpath.basename(path)}"
    with fs.open_output_stream(tmp) as stream:
        write(stream)
    fs.move(tmp, path)


def write_file(uri: str, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``uri`` atomically, creating its folder."""
    fs, path = resolve(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    payload = data.encode() if isinstance(data, str) else data
    write_bytes_atomic(fs, path, lambda stream: stream.write(payload))


def write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write a Parquet file (zstd) atomically."""
    write_bytes_atomic(fs, path, lambda stream: pq.write_table(table, stream, compression="zstd"))


def read_parquet(uri: str, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    """A Parquet file by path or URI."""
    fs, path = resolve(uri)
    return pq.read_table(path, filesystem=fs, columns=columns, schema=schema)


def list_parts(fs: pafs.FileSystem, folder: str) -> list[str]:
    """Paths of the ``part-*`` files in ``folder`` (none if it does not exist), oldest first."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    files = [i for i in infos if i.type == pafs.FileType.File and i.base_name.startswith(PART_PREFIX)]
    return [i.path for i in sorted(files, key=lambda i: (i.mtime_ns or 0, i.path))]
