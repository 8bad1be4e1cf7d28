"""The SPANK plugin's ``plugin_version`` is read from the file, never by loading it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from globus_tmp.elfsym import NotElf, read_uint32

from unit.elfbuild import write_elf

ROOT = Path(__file__).resolve().parents[2]
HEADERS = Path("/usr/include/slurm")


@pytest.mark.parametrize(("is64", "little"), [(True, True), (False, True), (True, False)])
def test_a_constant_is_read_in_any_class_and_byte_order(
    tmp_path: Path, is64: bool, little: bool
) -> None:
    so = write_elf(tmp_path / "p.so", "plugin_version", 0x180B07, is64=is64, little=little)
    assert read_uint32(str(so), "plugin_version") == 0x180B07
    with pytest.raises(NotElf, match="no symbol"):
        read_uint32(str(so), "spank_plugin_version")


def test_what_is_not_an_elf_object_says_so(tmp_path: Path) -> None:
    text = tmp_path / "plugin.so"
    text.write_text("#!/bin/sh\n")
    with pytest.raises(NotElf, match="not an ELF"):
        read_uint32(str(text), "plugin_version")
    truncated = write_elf(tmp_path / "t.so", "plugin_version", 1)
    truncated.write_bytes(truncated.read_bytes()[:0x120])
    with pytest.raises(NotElf):
        read_uint32(str(truncated), "plugin_version")
    with pytest.raises(OSError):
        read_uint32(str(tmp_path / "missing.so"), "plugin_version")


@pytest.mark.skipif(
    not shutil.which("gcc") or not (HEADERS / "spank.h").exists(), reason="needs gcc and spank.h"
)
@pytest.mark.parametrize("ldflags", [[], ["-Wl,-z,now"]])
def test_the_real_plugin_built_here_carries_the_headers_version(
    tmp_path: Path, ldflags: list[str]
) -> None:
    """Also linked with -z now (distributions' hardening): dlopen would fail outside
    Slurm on its undefined spank_* symbols, the file is read all the same."""
    so = tmp_path / "globus_tmp_spank.so"
    cmd = ["gcc", "-O2", "-fPIC", "-shared", f"-I{HEADERS}", *ldflags, "-o", str(so)]
    subprocess.run([*cmd, str(ROOT / "spank" / "globus_tmp_spank.c")], check=True)
    header = (HEADERS / "slurm_version.h").read_text()
    found = re.search(r"#define SLURM_VERSION_NUMBER (0x[0-9a-fA-F]+)", header)
    assert found is not None
    assert read_uint32(str(so), "plugin_version") == int(found[1], 16)
