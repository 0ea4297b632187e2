"""The Debian fetcher: index parsing, dependency resolution, downloads checked by hash, and .deb
unpacking confined to the root. Everything is made in code; file:// URLs stand in for a mirror."""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import re
import tarfile
from pathlib import Path

import pytest

from edgeq.emulator.debian import DebianError, extract_deb, fetch, parse_packages, resolve, signed_index

PACKAGES = """\
Package: python3.11-minimal
Version: 3.11.2-6
Pre-Depends: libc6 (>= 2.36)
Depends: libpython3.11-minimal (= 3.11.2-6), libexpat1 (>= 2.1~beta3), zlib1g (>= 1:1.2.0)
Description: a long description
 that continues on this line: Depends: not-a-package
Filename: pool/main/p/python3.11/python3.11-minimal_3.11.2-6_arm64.deb
Size: 100
SHA256: aa

Package: libpython3.11-minimal
Version: 3.11.2-6
Depends: libc6, libssl3 | libssl1.1
Filename: pool/main/p/python3.11/libpython3.11-minimal_3.11.2-6_arm64.deb
Size: 10
SHA256: bb

Package: libc6
Version: 2.36-9
Depends: libgcc-s1
Filename: pool/main/g/glibc/libc6_2.36-9_arm64.deb
Size: 20
SHA256: cc

Package: libgcc-s1
Version: 12.2.0
Depends: gcc-12-base, libc6
Filename: pool/main/g/gcc-12/libgcc-s1_12.2.0_arm64.deb
Size: 1
SHA256: dd

Package: gcc-12-base
Version: 12.2.0
Filename: pool/main/g/gcc-12/gcc-12-base_12.2.0_arm64.deb
Size: 1
SHA256: ee

Package: libexpat1-real
Version: 2.5.0
Provides: libexpat1
Filename: pool/main/e/expat/libexpat1-real_2.5.0_arm64.deb
Size: 2
SHA256: ff

Package: zlib1g
Version: 1:1.2.13
Filename: pool/main/z/zlib/zlib1g_1.2.13_arm64.deb
Size: 3
SHA256: 11

Package: libssl1.1
Version: 1.1.1
Filename: pool/main/o/openssl/libssl1.1_1.1.1_arm64.deb
Size: 4
SHA256: 22
"""


def test_parse_packages_reads_every_stanza_and_skips_continuation_lines() -> None:
    index = parse_packages(PACKAGES)
    assert [p.name for p in index][:3] == ["python3.11-minimal", "libpython3.11-minimal", "libc6"]
    py = index[0]
    assert py.depends[0] == ("libc6",)  # Pre-Depends first
    assert ("libexpat1",) in py.depends and py.size == 100 and py.sha256 == "aa"
    assert all("not-a-package" not in alts for alts in py.depends)
    assert index[1].depends[1] == ("libssl3", "libssl1.1")
    assert index[5].provides == ("libexpat1",)


def test_resolve_follows_dependencies_alternatives_and_virtual_packages() -> None:
    chosen = [p.name for p in resolve(parse_packages(PACKAGES), ["python3.11-minimal"])]
    # libssl3 is not in the index: its alternative libssl1.1 is taken; libexpat1 is virtual.
    assert chosen == sorted(["python3.11-minimal", "libpython3.11-minimal", "libc6", "libgcc-s1", "gcc-12-base",
                             "libexpat1-real", "zlib1g", "libssl1.1"])


def test_resolve_names_what_is_missing() -> None:
    index = parse_packages(PACKAGES)
    with pytest.raises(DebianError, match="package 'python9' is not in the index"):
        resolve(index, ["python9"])
    broken = parse_packages(PACKAGES.replace("Depends: gcc-12-base, libc6", "Depends: gcc-99-base | gcc-98-base, libc6"))
    missing = "'libgcc-s1' depends on gcc-99-base | gcc-98-base, which the index does not have"
    with pytest.raises(DebianError, match=re.escape(missing)):
        resolve(broken, ["libc6"])


def test_fetch_checks_size_and_hash(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    dest = tmp_path / "dest.bin"
    assert fetch(src.as_uri(), dest, sha256=digest, size=7) == 7
    assert dest.read_bytes() == b"payload"
    bad = tmp_path / "bad.bin"
    with pytest.raises(DebianError, match="does not match the signed index"):
        fetch(src.as_uri(), bad, sha256="0" * 64)
    with pytest.raises(DebianError, match="does not match the signed index"):
        fetch(src.as_uri(), bad, size=8)
    assert not bad.exists() and not bad.with_name("bad.bin.part").exists()
    with pytest.raises(DebianError, match="cannot download"):
        fetch((tmp_path / "missing").as_uri(), bad)


def test_signed_index_refuses_an_unsigned_release(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "dists" / "bookworm").mkdir(parents=True)
    (mirror / "dists" / "bookworm" / "InRelease").write_text("Origin: Debian\nSHA256:\n aa 1 main/binary-arm64/Packages.xz\n")
    work = tmp_path / "work"
    work.mkdir()
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    if not keyring.is_file():
        pytest.fail("Debian's archive keyring is not installed (apt-get install debian-archive-keyring)")
    with pytest.raises(DebianError, match="bad or unknown signature"):
        signed_index(mirror.as_uri(), "bookworm", "main", "arm64", keyring, work)


def test_signed_index_names_a_missing_keyring(tmp_path: Path) -> None:
    with pytest.raises(DebianError, match=r"keyring .* is missing; install it: sudo apt-get install debian-archive-keyring"):
        signed_index(tmp_path.as_uri(), "bookworm", "main", "arm64", tmp_path / "nope.gpg", tmp_path)


# -- .deb unpacking ----------------------------------------------------------------------------


def _tar(members: list[tuple[str, str, object]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "file":
                data = bytes(value)  # type: ignore[arg-type]
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(value)
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(value)
                tar.addfile(info)
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                tar.addfile(info)
    return buf.getvalue()


def _deb(path: Path, members: list[tuple[str, str, object]]) -> Path:
    def ar_member(name: str, data: bytes) -> bytes:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n".encode()
        return header + data + (b"\n" if len(data) % 2 else b"")

    control = _tar([("file", "./control", b"Package: x\n")])
    path.write_bytes(b"!<arch>\n" + ar_member("debian-binary", b"2.0\n") + ar_member("control.tar.xz", control)
                     + ar_member("data.tar.xz", _tar(members)))
    return path


def test_extract_deb_unpacks_files_links_and_rewrites_absolute_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    deb = _deb(tmp_path / "a.deb", [
        ("dir", "./", None), ("dir", "./usr/", None), ("dir", "./usr/bin/", None),
        ("file", "./usr/bin/tool", b"#!tool"),
        ("sym", "./usr/bin/alias", "tool"),
        ("dir", "./lib/", None),
        ("sym", "./lib/ld.so", "/usr/bin/tool"),  # absolute inside the guest
        ("hard", "./usr/bin/tool2", "./usr/bin/tool"),
        ("chr", "./dev-null", None),
    ])
    extract_deb(deb, root)
    assert (root / "usr/bin/tool").read_bytes() == b"#!tool"
    assert os.readlink(root / "usr/bin/alias") == "tool"
    assert os.readlink(root / "lib/ld.so") == "../usr/bin/tool"
    assert (root / "lib/ld.so").read_bytes() == b"#!tool"
    assert (root / "usr/bin/tool2").read_bytes() == b"#!tool"
    assert not (root / "dev-null").exists()


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (("file", "../evil", b"x"), "points outside the root"),
        (("file", "./a/../../evil", b"x"), "points outside the root"),
        (("file", "/evil", b"x"), "points outside the root"),
        (("sym", "./escape", "../../evil"), "symlink './escape' -> '../../evil': it points outside the root"),
        (("hard", "./hard", "../evil"), "hard link './hard' -> '../evil': it points outside the root"),
    ],
)
def test_extract_deb_refuses_members_outside_the_root(tmp_path: Path, member: tuple[str, str, object], message: str) -> None:
    root = tmp_path / "deep" / "root"
    root.mkdir(parents=True)
    (tmp_path / "deep" / "evil").write_bytes(b"before")
    deb = _deb(tmp_path / "bad.deb", [member])
    with pytest.raises(DebianError, match=message.replace("(", r"\(").replace(")", r"\)")):
        extract_deb(deb, root)
    assert (tmp_path / "deep" / "evil").read_bytes() == b"before"
    assert not (tmp_path / "evil").exists()


def test_extract_deb_refuses_writing_through_a_symlink_that_leaves_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)  # planted by something else; a package writes through it
    deb = _deb(tmp_path / "a.deb", [("file", "./link/file", b"x")])
    with pytest.raises(DebianError, match="its folder resolves outside the root"):
        extract_deb(deb, root)
    assert not (outside / "file").exists()


def test_extract_deb_refuses_what_is_not_a_deb(tmp_path: Path) -> None:
    bad = tmp_path / "x.deb"
    bad.write_bytes(lzma.compress(b"not an ar archive"))
    with pytest.raises(DebianError, match=r"not a \.deb"):
        extract_deb(bad, tmp_path)
