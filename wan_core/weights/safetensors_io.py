"""Streaming safetensors: read one tensor at a time with plain file reads at the header's offsets,
and write shards header-first, then each tensor's bytes, so memory stays bounded by one tensor.

(`safetensors.safe_open` memory-maps the file, and pages touched through a map count as resident;
`safetensors.torch.save_file` builds a whole shard in memory. Neither is used for conversion.)
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import math
import struct
from pathlib import Path
from typing import Callable, Iterable

import torch

from wan_core.errors import UserError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_HEADER_LIMIT = 100 * 2**20
COPY_CHUNK = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class TensorMeta:
    dtype: torch.dtype
    shape: tuple[int, ...]
    nbytes: int


@dataclasses.dataclass(frozen=True)
class _Entry:
    meta: TensorMeta
    begin: int  # absolute file offset


class SafetensorsReader:
    """Header of one .safetensors file, validated against the file size; tensors read on demand."""

    def __init__(self, location):
        self.location = location  # wan_core.storage.Location
        self.name = str(location)
        with location.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise UserError(f"{self.name}: truncated safetensors file (no header)")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > _HEADER_LIMIT:
                raise UserError(f"{self.name}: not a safetensors file (header length {header_len})")
            header_bytes = f.read(header_len)
        if len(header_bytes) < header_len:
            raise UserError(f"{self.name}: truncated safetensors file (header cut short)")
        try:
            header = json.loads(header_bytes)
        except ValueError as exc:
            raise UserError(f"{self.name}: corrupt safetensors header ({exc})") from None
        self.metadata = header.pop("__metadata__", None) or {}
        data_start = 8 + header_len
        file_size = location.size()
        self.entries: dict[str, _Entry] = {}
        for key, info in header.items():
            try:
                dtype = DTYPES[info["dtype"]]
                shape = tuple(int(s) for s in info["shape"])
                begin, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{self.name}: corrupt safetensors header entry for {key!r}") from None
            nbytes = math.prod(shape) * dtype.itemsize
            if end - begin != nbytes or begin < 0:
                raise UserError(f"{self.name}: tensor {key!r} has {end - begin} bytes, its shape needs {nbytes}")
            if data_start + end > file_size:
                raise UserError(f"{self.name}: truncated file: tensor {key!r} ends at byte {data_start + end}, "
                                f"the file has {file_size}")
            self.entries[key] = _Entry(TensorMeta(dtype, shape, nbytes), data_start + begin)

    def keys(self) -> list[str]:
        return list(self.entries)

    def meta(self, key: str) -> TensorMeta:
        return self.entries[key].meta

    def copy_to(self, key: str, out) -> None:
        """Append the raw bytes of tensor `key` to the open binary file `out`, without holding them:
        kernel-side copy (copy_file_range) between local files, else fixed-size chunks."""
        entry = self.entries[key]
        local = self.location.local_path()
        remaining, offset = entry.meta.nbytes, entry.begin
        if local is not None and hasattr(os, "copy_file_range") and hasattr(out, "fileno"):
            out.flush()
            with open(local, "rb") as f:
                try:
                    while remaining:
                        n = os.copy_file_range(f.fileno(), out.fileno(), min(remaining, COPY_CHUNK), offset)
                        if n == 0:
                            raise UserError(f"{self.name}: truncated while reading tensor {key!r}")
                        remaining -= n
                        offset += n
                    out.seek(0, os.SEEK_END)
                    return
                except OSError as exc:  # e.g. EXDEV on old kernels: fall back to chunks
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    out.seek(0, os.SEEK_END)
        with self.location.open("rb") as f:
            f.seek(offset)
            while remaining:
                chunk = f.read(min(remaining, COPY_CHUNK))
                if not chunk:
                    raise UserError(f"{self.name}: truncated while reading tensor {key!r}")
                out.write(chunk)
                remaining -= len(chunk)

    def read(self, key: str) -> torch.Tensor:
        entry = self.entries[key]
        buf = bytearray(entry.meta.nbytes)
        with self.location.open("rb") as f:
            f.seek(entry.begin)
            view, got = memoryview(buf), 0
            while got < len(buf):
                n = f.readinto(view[got:]) if hasattr(f, "readinto") else _read_into(f, view[got:])
                if not n:
                    raise UserError(f"{self.name}: truncated while reading tensor {key!r}")
                got += n
        if entry.meta.nbytes == 0:
            return torch.empty(entry.meta.shape, dtype=entry.meta.dtype)
        return torch.frombuffer(buf, dtype=entry.meta.dtype).reshape(entry.meta.shape)


def _read_into(f, view) -> int:
    data = f.read(len(view))
    view[: len(data)] = data
    return len(data)


def plan_shards(items: Iterable[tuple[str, TensorMeta]], max_shard_bytes: int) -> list[list[tuple[str, TensorMeta]]]:
    """Split (name, meta) pairs, in order, into shards of at most max_shard_bytes (a larger tensor gets
    a shard of its own)."""
    shards: list[list[tuple[str, TensorMeta]]] = [[]]
    size = 0
    for name, meta in items:
        if shards[-1] and size + meta.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, meta))
        size += meta.nbytes
    return [s for s in shards if s]


def tensor_bytes_writer(fetch: Callable[[str], torch.Tensor], metas: dict[str, TensorMeta]):
    """A `write_bytes(name, file)` for write_shard from a function that returns tensors."""
    def write_bytes(name, f):
        tensor = fetch(name)
        meta = metas[name]
        if tensor.dtype != meta.dtype or tuple(tensor.shape) != meta.shape:
            raise RuntimeError(f"tensor {name} changed: {tensor.dtype} {tuple(tensor.shape)} vs {meta}")
        if meta.nbytes:
            f.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return write_bytes


def write_shard(path: Path, items: list[tuple[str, TensorMeta]], write_bytes: Callable[[str, object], None],
                metadata: dict[str, str] | None = None, progress: Callable[[int], None] | None = None) -> None:
    """Write one .safetensors file: the header from the known metas, then each tensor's bytes, appended
    by `write_bytes(name, file)` (a byte-range copy or a fetched tensor, see tensor_bytes_writer)."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, meta in items:
        header[name] = {"dtype": DTYPE_NAMES[meta.dtype], "shape": list(meta.shape),
                        "data_offsets": [offset, offset + meta.nbytes]}
        offset += meta.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # align the data section to 8 bytes, as safetensors does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, meta in items:
            start = f.tell()
            write_bytes(name, f)
            if f.tell() - start != meta.nbytes:
                raise RuntimeError(f"{path}: wrote {f.tell() - start} bytes for {name}, expected {meta.nbytes}")
            if progress:
                progress(meta.nbytes)


def write_sharded(folder: Path, items: list[tuple[str, TensorMeta]], write_bytes: Callable[[str, object], None],
                  file_prefix: str, index_name: str | None, max_shard_bytes: int, single_file_name: str | None = None,
                  progress: Callable[[int], None] | None = None) -> list[str]:
    """Write items as `{prefix}-0000i-of-0000n.safetensors` shards plus an index naming exactly those
    files. With `single_file_name`, a checkpoint that fits one shard is written as that one file with no
    index (diffusers' convention). Returns the file names written."""
    shards = plan_shards(items, max_shard_bytes)
    if single_file_name and len(shards) == 1:
        write_shard(folder / single_file_name, shards[0], write_bytes, progress=progress)
        return [single_file_name]
    names, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        name = f"{file_prefix}-{i:05d}-of-{len(shards):05d}.safetensors"
        write_shard(folder / name, shard, write_bytes, progress=progress)
        names.append(name)
        weight_map.update({key: name for key, _ in shard})
    if index_name:
        total = sum(meta.nbytes for _, meta in items)
        (folder / index_name).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                    indent=2) + "\n")
    return names


def parse_size(text: str) -> int:
    """'5GB', '500MB', '1024' -> bytes (decimal units like huggingface's max_shard_size; KiB/MiB/GiB binary)."""
    s = str(text).strip().upper()
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for unit, factor in units.items():
        if s.endswith(unit):
            try:
                value = float(s[: -len(unit)])
            except ValueError:
                break
            if value > 0:
                return int(value * factor)
    if s.isdigit() and int(s) > 0:
        return int(s)
    raise UserError(f"--max-shard-size: cannot read {text!r} as a size (e.g. 5GB, 500MB)")
