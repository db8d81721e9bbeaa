"""Our tar fast path parses exactly what tarfile parses; the shared epoch survives copies."""
from __future__ import annotations

import copy
import io
import pickle
import tarfile

import pytest

from dalle3.data.loader import SharedEpoch
from dalle3.data.skips import SkipLog
from dalle3.data.tarstream import FastTarInfo, TarSamples


def archive(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        def add(name, data=b"", **attrs):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in attrs.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data))
        add("000001.png", b"png" * 100, mtime=1_700_000_000.5)  # float mtime: a pax header in PAX format
        add("ünïcode.json", b"{}")
        add("p" * 90 + "/" + "q" * 90 + ".txt", b"ustar prefix")
        add("adir", type=tarfile.DIRTYPE)
        add("link", type=tarfile.SYMTYPE, linkname="000001.png")
        if fmt != tarfile.USTAR_FORMAT:
            add("d/" + "x" * 150 + ".txt", b"long name")
            add("big_uid.txt", b"u", uid=8**8 + 5)  # base-256 number field: the stock parser's job
    return buf.getvalue()


def members(data: bytes, tarinfo=tarfile.TarInfo) -> list:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*", tarinfo=tarinfo) as tar:
        return [(m.get_info(), m.offset, m.offset_data, m.pax_headers) for m in tar]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_fast_header_parsing_matches_tarfile(fmt):
    data = archive(fmt)
    assert members(data, FastTarInfo) == members(data)


def test_bad_checksum_still_fails_like_tarfile():
    data = bytearray(archive(tarfile.USTAR_FORMAT))
    data[0] ^= 1  # first member's name: checksum no longer matches
    with pytest.raises(tarfile.ReadError):
        members(bytes(data), FastTarInfo)


def test_pax_long_names_reach_the_sample_keys(tmp_path):
    path = tmp_path / "a.tar"
    path.write_bytes(archive(tarfile.PAX_FORMAT))
    keys = [s["__key__"] for s in TarSamples(SkipLog())([{"url": str(path)}])]
    assert keys == ["000001", "ünïcode", "p" * 90 + "/" + "q" * 90, "d/" + "x" * 150, "big_uid"]


def test_shared_epoch_copies_are_detached_but_keep_the_value():
    epoch = SharedEpoch(3)
    for clone in (copy.deepcopy(epoch), pickle.loads(pickle.dumps(epoch))):
        assert clone.get() == 3
        clone.set(7)
        assert epoch.get() == 3
