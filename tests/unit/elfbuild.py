"""A minimal ELF shared object holding one ``unsigned int`` symbol, for tests of
:mod:`globus_tmp.elfsym` without a compiler (32/64 bit, either byte order)."""

from __future__ import annotations

import struct
from pathlib import Path


def write_elf(
    path: Path, symbol: str, value: int, *, is64: bool = True, little: bool = True
) -> Path:
    """Sections: null, .dynsym, .dynstr, .rodata (the value at address 0x2000)."""
    end = "<" if little else ">"
    names = b"\0" + symbol.encode() + b"\0"
    rodata = struct.pack(end + "I", value)
    if is64:
        sym = struct.Struct(end + "IBBHQQ")
        symbols = bytes(sym.size) + sym.pack(1, 0x11, 0, 3, 0x2000, 4)
        sec, header = struct.Struct(end + "IIQQQQIIQQ"), struct.Struct(end + "HHIQQQIHHHHHH")
    else:
        sym = struct.Struct(end + "IIIBBH")
        symbols = bytes(sym.size) + sym.pack(1, 0x2000, 4, 0x11, 0, 3)
        sec, header = struct.Struct(end + "IIIIIIIIII"), struct.Struct(end + "HHIIIIIHHHHHH")
    at_rodata, at_names, at_symbols, at_sections = 0x100, 0x110, 0x140, 0x200
    sections = [
        sec.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        sec.pack(0, 11, 2, 0, at_symbols, len(symbols), 2, 1, 8, sym.size),
        sec.pack(0, 3, 2, 0, at_names, len(names), 0, 0, 1, 0),
        sec.pack(0, 1, 2, 0x2000, at_rodata, 4, 0, 0, 4, 0),
    ]
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if little else 2, 1]) + bytes(9)
    ehsize = 16 + header.size
    head = ident + header.pack(3, 62, 1, 0, 0, at_sections, 0, ehsize, 0, 0, sec.size, 4, 0)
    image = bytearray(at_sections + sec.size * len(sections))
    for offset, data in (
        (0, head),
        (at_rodata, rodata),
        (at_names, names),
        (at_symbols, symbols),
        (at_sections, b"".join(sections)),
    ):
        image[offset : offset + len(data)] = data
    path.write_bytes(bytes(image))
    return path
