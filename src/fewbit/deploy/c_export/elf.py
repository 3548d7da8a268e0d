"""Flash bytes of the generated C: compile it for this host and read the object's sections."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from fewbit.errors import ConfigError


def compiled_flash_bytes(folder: Path) -> int | None:
    """text + data (+ rodata) of `fewbit_model.o` compiled for this host with `cc -O2`, or None."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "fewbit_model.o"
        done = subprocess.run(
            [cc, "-std=c99", "-O2", "-ffp-contract=off", "-c", "-o", str(obj), str(folder / "fewbit_model.c")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise ConfigError(f"C export: the generated code does not compile: {done.stderr.strip()[:300]}")
        return elf_alloc_bytes(obj.read_bytes())


def elf_alloc_bytes(data: bytes) -> int:
    """Bytes an ELF object puts in memory that a device keeps in flash: allocated sections that
    hold contents (text, rodata, data; not bss). ValueError when `data` is not ELF."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64, little = data[4] == 2, data[5] == 1
    end = "<" if little else ">"
    if is64:
        shoff = struct.unpack_from(end + "Q", data, 0x28)[0]
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
        fmt, flags_at, size_at = end + "IIQQQQIIQQ", 2, 5
    else:
        shoff = struct.unpack_from(end + "I", data, 0x20)[0]
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
        fmt, flags_at, size_at = end + "IIIIIIIIII", 2, 5
    total = 0
    for i in range(shnum):
        fields = struct.unpack_from(fmt, data, shoff + i * shentsize)
        sh_type, sh_flags, sh_size = fields[1], fields[flags_at], fields[size_at]
        if sh_flags & 0x2 and sh_type != 8:  # SHF_ALLOC, not SHT_NOBITS
            total += sh_size
    return total


def elf_sections(data: bytes) -> list[dict]:
    """The sections of an ELF file: name, addr, size, and whether each is allocated (`alloc`) and
    holds no file contents (`nobits`: bss, stacks). ValueError when `data` is not ELF."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64, little = data[4] == 2, data[5] == 1
    end = "<" if little else ">"
    if is64:
        shoff = struct.unpack_from(end + "Q", data, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
        fmt = end + "IIQQQQIIQQ"
    else:
        shoff = struct.unpack_from(end + "I", data, 0x20)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)
        fmt = end + "IIIIIIIIII"
    headers = [struct.unpack_from(fmt, data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4] if shstrndx < shnum else 0
    out = []
    for name_off, sh_type, flags, addr, _offset, size, *_ in headers:
        start = names_at + name_off
        name = data[start : data.index(b"\0", start)].decode("ascii", "replace") if names_at else ""
        out.append({"name": name, "addr": addr, "size": size, "alloc": bool(flags & 0x2), "nobits": sh_type == 8})
    return out
