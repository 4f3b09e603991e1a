"""Find the checkpoints under folders, globs, files or URIs, with a fingerprint (size, mtime) each.

A folder holding ``config.json``, ``adapter_config.json`` or a ``*.index.json`` is one model (a
Hugging Face folder, a PEFT adapter or a sharded checkpoint); elsewhere each ``.safetensors/.pt/.pth/.bin`` file is one model. A path given
explicitly is always a unit, so a missing or foreign file is reported rather than silently skipped.
"""
from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs

from pipeline.checkpoint.adapter import ADAPTER_CONFIG
from pipeline.checkpoint.reader import INDEX_SUFFIX, WEIGHT_SUFFIXES, natural_key
from pipeline.storage import TMP_PREFIX, resolve

_GLOB = "*?["


@dataclass(frozen=True)
class CheckpointRef:
    uri: str
    size: int
    mtime_ns: int


def model_name(uri: str) -> str:
    """A checkpoint's default name: its file's name without a checkpoint suffix, or its folder's
    name (dots in folder names kept: ``Qwen2.5-0.5B``)."""
    base = posixpath.basename(uri.rstrip("/"))
    return next((base[:-len(s)] for s in WEIGHT_SUFFIXES if base.endswith(s)), base)


def discover(inputs: list[str]) -> list[CheckpointRef]:
    """Checkpoints named by ``inputs`` (paths, URIs, folders or glob patterns), deduplicated, sorted."""
    found: dict[str, CheckpointRef] = {}
    for spec in inputs:
        for ref in _discover_one(spec):
            found.setdefault(ref.uri, ref)
    return [found[u] for u in sorted(found, key=natural_key)]


def _discover_one(spec: str) -> list[CheckpointRef]:
    fs, path = resolve(spec)
    scheme = spec.split("://", 1)[0] + "://" if "://" in spec and not spec.startswith("file://") else ""
    if any(c in path for c in _GLOB):
        base = path[:min(path.index(c) for c in _GLOB if c in path)].rpartition("/")[0] or "/"
        listing = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        matched = [i for i in listing if fnmatch.fnmatchcase(i.path, path)]
        refs = []
        for info in matched:
            refs.extend(_walk(fs, info.path, scheme) if info.type == pafs.FileType.Directory
                        else [_ref(scheme, info.path, [info])])
        return refs
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        return _walk(fs, path, scheme)
    return [_ref(scheme, path, [info])]


def _walk(fs, root: str, scheme: str) -> list[CheckpointRef]:
    infos = [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
             if not posixpath.basename(i.path).startswith((".", TMP_PREFIX))]
    files = [i for i in infos if i.type == pafs.FileType.File]
    model_dirs = {posixpath.dirname(i.path) for i in files
                  if i.base_name in ("config.json", ADAPTER_CONFIG) or i.base_name.endswith(INDEX_SUFFIX)}
    if root in model_dirs:
        return [_ref(scheme, root, [i for i in files if posixpath.dirname(i.path) == root])]
    refs = [_ref(scheme, d, [i for i in files if posixpath.dirname(i.path) == d]) for d in model_dirs]
    for info in files:
        inside_model = any(info.path.startswith(d + "/") for d in model_dirs)
        if not inside_model and info.base_name.endswith(WEIGHT_SUFFIXES):
            refs.append(_ref(scheme, info.path, [info]))
    return refs


def _ref(scheme: str, path: str, infos: list[pafs.FileInfo]) -> CheckpointRef:
    size = sum(i.size or 0 for i in infos)
    mtime = max((i.mtime_ns or 0 for i in infos), default=0)
    return CheckpointRef(f"{scheme}{path}", int(size), int(mtime))
