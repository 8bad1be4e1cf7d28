"""The value of one exported constant of an ELF shared object, read from the file.

``globus-tmp-admin doctor`` must know which Slurm the SPANK plugin was built for: its
``plugin_version`` (``SPANK_PLUGIN`` in ``slurm/spank.h`` defines it as the headers'
``SLURM_VERSION_NUMBER``, in 22.05, 24.11 and 25.11 alike), which Slurm's
``plugin_peek`` compares with its own major.minor before loading the plugin.

Loading the plugin to ask it (``ctypes.CDLL(path, RTLD_LAZY)`` and
``c_uint32.in_dll``) is not an option: the plugin's undefined ``spank_*``/``slurm_*``
symbols are resolved at ``dlopen`` when it was linked with ``-z now`` (distributions'
hardening flags set it; ``RTLD_LAZY`` cannot override it), so the ``dlopen`` fails
outside Slurm with ``undefined symbol: spank_get_item``; and a successful ``dlopen`` runs
the object's constructors as root. So the symbol is looked up in the file's dynamic
symbol table (``.dynsym``, what ``dlsym`` sees; ``.symtab`` if stripped of it) and its
bytes read from the section that holds it. Nothing of the file is executed.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import BinaryIO

_SHT_SYMTAB, _SHT_DYNSYM, _SHT_NOBITS = 2, 11, 8
_SHN_UNDEF, _SHN_LORESERVE = 0, 0xFF00
_MAX_SECTIONS = 4096
_MAX_TABLE = 64 << 20
"""A symbol or string table larger than this is not a plugin's (never read whole)."""


class NotElf(ValueError):
    """The file is not an ELF object this reader understands, or lacks the symbol."""


class _Layout:
    """Field layouts of one ELF class (32/64 bit) and byte order."""

    def __init__(self, ident: bytes) -> None:
        if (
            len(ident) < 16
            or ident[:4] != b"\x7fELF"
            or ident[4] not in (1, 2)
            or ident[5] not in (1, 2)
        ):
            raise NotElf("not an ELF file")
        end = "<" if ident[5] == 1 else ">"
        self.is64 = ident[4] == 2
        self.order = end
        self.header = struct.Struct(end + ("HHIQQQIHHHHHH" if self.is64 else "HHIIIIIHHHHHH"))
        self.section = struct.Struct(end + ("IIQQQQIIQQ" if self.is64 else "IIIIIIIIII"))
        self.symbol = struct.Struct(end + ("IBBHQQ" if self.is64 else "IIIBBH"))

    def sym(self, raw: bytes) -> tuple[int, int, int, int]:
        """(name offset, section index, value, size) of one symbol table entry."""
        if self.is64:
            name, _, _, shndx, value, size = self.symbol.unpack(raw)
        else:
            name, value, size, _, _, shndx = self.symbol.unpack(raw)
        return name, shndx, value, size


def read_uint32(path: str, name: str) -> int:
    """The value of the defined ``unsigned int`` constant ``name`` (e.g.
    ``plugin_version``) in the ELF file ``path``. :class:`NotElf` when it is not there;
    OSError when the file cannot be read."""
    raw, order = _lookup(path, name)
    if len(raw) != 4:
        raise NotElf(f"{name} is {len(raw)} bytes, not an unsigned int")
    value: int = struct.unpack(order + "I", raw)[0]
    return value


def _lookup(path: str, name: str) -> tuple[bytes, str]:
    """The bytes of symbol ``name`` and the file's byte order (``<`` or ``>``)."""
    with open(path, "rb") as fh:
        layout = _Layout(fh.read(16))
        fields = layout.header.unpack(_read(fh, 16, layout.header.size))
        shoff, shentsize, shnum = fields[5], fields[10], fields[11]
        if not shoff or shentsize != layout.section.size or not 0 < shnum <= _MAX_SECTIONS:
            raise NotElf("no section headers")
        table = _read(fh, shoff, shentsize * shnum)
        sections = [layout.section.unpack_from(table, i * shentsize) for i in range(shnum)]
        for kind in (_SHT_DYNSYM, _SHT_SYMTAB):
            for sec in sections:
                if sec[1] != kind or not sec[6] < shnum:
                    continue
                found = _find(fh, layout, sections, sec, name)
                if found is not None:
                    return found, layout.order
    raise NotElf(f"no symbol {name}")


def _find(
    fh: BinaryIO,
    layout: _Layout,
    sections: list[tuple[int, ...]],
    table: tuple[int, ...],
    name: str,
) -> bytes | None:
    strtab = sections[table[6]]  # sh_link: the table's string table
    symbols = _read(fh, table[4], table[5])
    names = _read(fh, strtab[4], strtab[5])
    wanted = name.encode() + b"\0"
    size = layout.symbol.size
    for at in range(0, len(symbols) - size + 1, size):
        name_at, shndx, value, length = layout.sym(symbols[at : at + size])
        if names[name_at : name_at + len(wanted)] != wanted:
            continue
        if shndx == _SHN_UNDEF or shndx >= min(_SHN_LORESERVE, len(sections)):
            return None  # undefined here, or absolute/common: no bytes in the file
        holder = sections[shndx]
        if holder[1] == _SHT_NOBITS:
            return bytes(length)  # .bss: zero-initialised
        offset = holder[4] + value - holder[3]  # sh_offset + (st_value - sh_addr)
        if not holder[4] <= offset <= holder[4] + holder[5] - length:
            raise NotElf(f"{name} lies outside its section")
        return _read(fh, offset, length)
    return None


def _read(fh: BinaryIO, offset: int, size: int) -> bytes:
    if size > _MAX_TABLE:
        raise NotElf("a table too large for a plugin")
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise NotElf("truncated file")
    return data
