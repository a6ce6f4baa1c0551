"""`softmaxkit check` and `softmaxkit calibrate` on hostile files.

Every file is generated here.  Each command runs in a child process whose
address space is capped (``RLIMIT_AS``) and which is killed if it does not
finish, so a file that makes the loader allocate gigabytes, block on a pipe or
loop shows up as a failure instead of taking the machine down.  The contract
checked for every file: exit status 1, nothing on stdout, exactly one line on
stderr that starts with ``softmaxkit COMMAND: error:``, no traceback, and no
code from the file run (the pickle payloads would create a marker file).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

resource = pytest.importorskip("resource")
if not sys.platform.startswith("linux"):
    # RLIMIT_AS is what bounds the children; other systems do not enforce it.
    pytest.skip("the address-space limit these tests rely on is Linux's", allow_module_level=True)

# Enough for Python, NumPy, PyTorch and an honest 64 MiB file; far below what
# the memory bombs below expand to.
ADDRESS_SPACE = 3 * 2**30
# A hang guard, not a speed check: a healthy run takes a second or two.
HANG_GUARD_S = 120
COMMANDS = ("check", "calibrate")


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "softmaxkit", *argv],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        preexec_fn=_limit_memory,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, command: str, *fragments: str) -> None:
    err = proc.stderr
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    assert proc.stdout == ""
    assert "Traceback" not in err, err[-2000:]
    assert err.count("\n") == 1 and err.endswith("\n"), err[-2000:]
    assert err.startswith(f"softmaxkit {command}: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    # Never advise the unsafe ways of reading a file.
    assert "allow_pickle" not in err and "weights_only=False" not in err, err


# -- building blocks --------------------------------------------------------------


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header that declares ``shape`` of ``descr``."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (descr, shape)
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def npy_bytes(a: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def raw_zip(members: list[dict]) -> bytes:
    """A zip archive written field by field, so that its headers can lie.

    Each member is a dict with ``name`` and ``data`` (the bytes as stored) and
    optionally ``method``, ``flags``, ``crc`` and ``size`` (the declared
    uncompressed size), which default to a stored, honest member.
    """
    out = io.BytesIO()
    central = []
    for m in members:
        name = m["name"].encode()
        data = m["data"]
        method = m.get("method", 0)
        flags = m.get("flags", 0)
        crc = m.get("crc", zlib.crc32(data))
        size = m.get("size", len(data))
        offset = out.tell()
        fields = struct.pack("<HHHHHIII", 20, flags, method, 0, 0x21, crc, len(data), size)
        out.write(b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name + data)
        central.append(
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + fields
            + struct.pack("<HHHHHI", len(name), 0, 0, 0, 0, 0)
            + struct.pack("<I", offset)
            + name
        )
    start = out.tell()
    directory = b"".join(central)
    out.write(directory)
    out.write(b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(directory), start, 0))
    return out.getvalue()


def deflated_zeros(header: bytes, n_bytes: int) -> tuple[bytes, int]:
    """Raw deflate data for ``header`` followed by ``n_bytes`` zeros, and its CRC.

    One MiB of zeros is compressed once and its (byte-aligned, independent)
    blocks repeated, so a gigabyte of content costs a megabyte and no
    gigabyte-sized compression run.
    """
    mib = 2**20
    assert n_bytes % mib == 0
    zeros = bytes(mib)
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = head.compress(header) + head.flush(zlib.Z_FULL_FLUSH)
    piece = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = piece.compress(zeros) + piece.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    for _ in range(n_bytes // mib):
        crc = zlib.crc32(zeros, crc)
    # The final, empty block of a fixed-Huffman deflate stream.
    return first + block * (n_bytes // mib) + b"\x03\x00", crc


def deflated_member(name: str, content: bytes) -> dict:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = packer.compress(content) + packer.flush()
    return {"name": name, "data": data, "method": 8, "crc": zlib.crc32(content), "size": len(content)}


def honest_npz(method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr("logits.npy", npy_bytes(np.zeros((64, 64), np.float32)))
        z.writestr("labels.npy", npy_bytes(np.zeros(64, np.int64)))
    return buf.getvalue()


def patch_zip_headers(raw: bytes, local_offset: int, central_offset: int, patch) -> bytes:
    """Apply ``patch(bytearray, position)`` to every local and central header."""
    data = bytearray(raw)
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        i = data.find(signature)
        while i >= 0:
            patch(data, i + offset)
            i = data.find(signature, i + 4)
    return bytes(data)


class WritesMarker:
    """Unpickling this calls open(marker, "w"), which creates the file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- the files --------------------------------------------------------------------


def make_bomb_npz(path: str) -> None:
    # 1 GiB of float32 zeros in about 1 MiB: the deflate ratio is about 1000:1.
    rows = 2**18
    header = npy_header("<f4", (rows, 1024))
    data, crc = deflated_zeros(header, rows * 1024 * 4)
    member = {"name": "logits.npy", "data": data, "method": 8, "crc": crc, "size": len(header) + rows * 4096}
    with open(path, "wb") as f:
        f.write(raw_zip([member, deflated_member("labels.npy", npy_bytes(np.zeros(rows, np.int64)))]))


def make_corrupt_deflate(path: str) -> None:
    raw = bytearray(honest_npz())
    i = raw.find(b"logits.npy") + len("logits.npy") + 5
    raw[i : i + 40] = bytes(range(40))
    with open(path, "wb") as f:
        f.write(raw)


def make_method_99(path: str) -> None:
    def patch(data, i):
        data[i : i + 2] = struct.pack("<H", 99)

    with open(path, "wb") as f:
        f.write(patch_zip_headers(honest_npz(zipfile.ZIP_STORED), 8, 10, patch))


def make_encrypted_flag(path: str) -> None:
    def patch(data, i):
        data[i] |= 1

    with open(path, "wb") as f:
        f.write(patch_zip_headers(honest_npz(zipfile.ZIP_STORED), 6, 8, patch))


def make_huge_claim_npy(path: str) -> None:
    # 10**12 float32 elements declared, 64 bytes present.
    with open(path, "wb") as f:
        f.write(npy_header("<f4", (10**6, 10**6)) + bytes(64))


def make_huge_claim_npz(path: str) -> None:
    logits = npy_header("<f4", (10**6, 10**6)) + bytes(64)
    labels = npy_bytes(np.zeros(10**6, np.int64)[:4])
    with open(path, "wb") as f:
        f.write(raw_zip([{"name": "logits.npy", "data": logits}, {"name": "labels.npy", "data": labels}]))


def make_lying_member_size(path: str) -> None:
    # The member says it holds 200 bytes; its deflate data expands to 64 MiB.
    header = npy_header("<f4", (16,))
    data, crc = deflated_zeros(header, 64 * 2**20)
    member = {"name": "logits.npy", "data": data, "method": 8, "crc": crc, "size": 200}
    labels = {"name": "labels.npy", "data": npy_bytes(np.zeros(1, np.int64))}
    with open(path, "wb") as f:
        f.write(raw_zip([member, labels]))


def make_truncated(suffix: str):
    def make(path: str) -> None:
        buf = io.BytesIO()
        if suffix == ".npy":
            np.save(buf, np.zeros((64, 64), np.float32))
        elif suffix == ".npz":
            np.savez(buf, logits=np.zeros((64, 64), np.float32), labels=np.zeros(64, np.int64))
        else:
            torch = pytest.importorskip("torch")
            torch.save({"logits": torch.zeros(64, 64), "labels": torch.zeros(64, dtype=torch.long)}, buf)
        data = buf.getvalue()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])

    return make


def make_empty(path: str) -> None:
    open(path, "wb").close()


def make_text(path: str) -> None:
    with open(path, "w") as f:
        f.write("logits,labels\n1.0,0\n")


def make_npy_named_npz(path: str) -> None:
    with open(path, "wb") as f:
        f.write(npy_bytes(np.zeros((2, 3), np.float32)))


def make_directory(path: str) -> None:
    os.mkdir(path)


def make_fifo(path: str) -> None:
    os.mkfifo(path)


def make_dangling_link(path: str) -> None:
    os.symlink(path + ".missing", path)


def make_link_loop(path: str) -> None:
    os.symlink(path, path)


def make_dev_zero_link(path: str) -> None:
    os.symlink("/dev/zero", path)


def torch_file(build):
    def make(path: str) -> None:
        torch = pytest.importorskip("torch")
        torch.save(build(torch), path)

    make.needs_torch = True
    return make


def make_stride0_pt(path: str) -> None:
    torch = pytest.importorskip("torch")
    # 16000 x 16000 float32 (1.02 GB) over a 16-byte storage.
    logits = torch.zeros(4).as_strided((16000, 16000), (0, 0))
    torch.save({"logits": logits, "labels": torch.zeros(16000, dtype=torch.long)}, path)


make_stride0_pt.needs_torch = True


def _nested(torch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"logits": torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]), "labels": torch.zeros(2)}


def make_deep_header(path: str) -> None:
    # A header nested 3000 deep, inside NumPy's 10000-character header limit.
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': " + "(" * 3000 + ")" * 3000 + ", }"
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() + bytes(8))


def make_long_header(path: str) -> None:
    # A 2 MB header (format 2.0 allows a 4-byte length).
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" + " " * (2 * 10**6) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x02\x00" + struct.pack("<I", len(text)) + text.encode() + bytes(8))


def make_bzip2_member(path: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_BZIP2) as z:
        z.writestr("logits.npy", npy_bytes(np.zeros((4, 4), np.float32)))
        z.writestr("labels.npy", npy_bytes(np.zeros(4, np.int64)))
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def make_many_members(path: str) -> None:
    # 20,000 members, none of them 'logits': the error lists a few names only.
    members = [{"name": f"m{i}.npy", "data": b""} for i in range(20_000)]
    with open(path, "wb") as f:
        f.write(raw_zip(members))


def make_nested_zip(path: str) -> None:
    inner = honest_npz()
    with open(path, "wb") as f:
        f.write(raw_zip([{"name": "logits.npy", "data": inner}, {"name": "labels.npy", "data": inner}]))


def make_torchscript(path: str) -> None:
    torch = pytest.importorskip("torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; the file is the point
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)


make_torchscript.needs_torch = True


def make_legacy_huge_storage(path: str) -> None:
    # torch's legacy (non-zip) format: the pickle declares a storage of
    # 2**31 - 1 floats (8 GiB) and torch allocates it before reading.
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save(torch.zeros(5), buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    stream = io.BytesIO(raw)
    import pickle

    for _ in range(2):  # the magic number and the protocol version
        pickle.load(stream)
    # BININT1 5: the first 5 after them is the storage's element count.
    at = raw.find(b"K\x05", stream.tell())
    if at < 0:
        pytest.skip("this torch writes legacy files differently")
    with open(path, "wb") as f:
        f.write(raw[:at] + b"J" + struct.pack("<i", 2**31 - 1) + raw[at + 2 :])


make_legacy_huge_storage.needs_torch = True


# (file name, maker, fragment expected in the error)
FILES = [
    ("stride0.pt", make_stride0_pt, "over the limit"),
    ("bomb.npz", make_bomb_npz, "over the limit"),
    ("corrupt_deflate.npz", make_corrupt_deflate, "logits"),
    ("method99.npz", make_method_99, "compression method 99"),
    ("encrypted.npz", make_encrypted_flag, "encrypted"),
    ("huge_claim.npy", make_huge_claim_npy, "(1000000, 1000000)"),
    ("huge_claim.npz", make_huge_claim_npz, "(1000000, 1000000)"),
    ("lying_member_size.npz", make_lying_member_size, "logits"),
    ("truncated.npy", make_truncated(".npy"), "truncated"),
    ("truncated.npz", make_truncated(".npz"), "not a NumPy .npz archive"),
    ("truncated.pt", make_truncated(".pt"), "cannot read as .pt"),
    ("empty.npy", make_empty, "empty"),
    ("empty.npz", make_empty, "empty"),
    ("empty.pt", make_empty, "empty"),
    ("text.npz", make_text, "not a NumPy .npz archive"),
    ("single_array.npz", make_npy_named_npz, "not a NumPy .npz archive"),
    ("directory.npz", make_directory, "not a regular file (a directory)"),
    ("fifo.npy", make_fifo, "not a regular file (a FIFO)"),
    ("fifo.npz", make_fifo, "not a regular file (a FIFO)"),
    ("fifo.pt", make_fifo, "not a regular file (a FIFO)"),
    ("dangling.npz", make_dangling_link, "broken symbolic link"),
    ("loop.npy", make_link_loop, "symbolic link loop"),
    ("dev_zero.npy", make_dev_zero_link, "not a regular file (a character device)"),
    ("deep_header.npy", make_deep_header, "invalid .npy header"),
    ("long_header.npy", make_long_header, "invalid .npy header"),
    ("bzip2.npz", make_bzip2_member, "compression method 12"),
    ("many_members.npz", make_many_members, "and 19990 more"),
    ("nested_zip.npz", make_nested_zip, "no .npy signature"),
    ("torchscript.pt", make_torchscript, "TorchScript"),
    ("legacy_huge_storage.pt", make_legacy_huge_storage, "cannot read as .pt"),
    ("complex.pt", torch_file(lambda t: {"logits": t.zeros(2, 3, dtype=t.complex64), "labels": t.zeros(2, dtype=t.long)}), "complex"),
    ("meta.pt", torch_file(lambda t: {"logits": t.zeros(3, 4, device="meta"), "labels": t.zeros(3)}), "meta tensor"),
    ("nested.pt", torch_file(_nested), "nested tensor"),
    (
        "sparse.pt",
        torch_file(lambda t: {"logits": t.zeros(3, 4).to_sparse(), "labels": t.zeros(3, dtype=t.long)}),
        "sparse",
    ),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Build each file once, lazily, for both commands."""
    root = tmp_path_factory.mktemp("hostile")
    built = {}

    def get(name, maker):
        if name not in built:
            if getattr(maker, "needs_torch", False):
                pytest.importorskip("torch")
            path = str(root / name)
            maker(path)
            built[name] = path
        return built[name]

    return get


# check and calibrate read files through one loader (softmaxkit.tools.files):
# check meets every hostile file, calibrate every .npy/.npz one and two .pt
# ones (each .pt case imports torch in a fresh process, about 3 s).
_CALIBRATE_PT = ("truncated.pt", "torchscript.pt")
CASES = [
    pytest.param(command, *f, id=f"{f[0]}-{command}")
    for f in FILES
    for command in COMMANDS
    if command == "check" or not f[0].endswith(".pt") or f[0] in _CALIBRATE_PT
]


@pytest.mark.parametrize(("command", "name", "maker", "fragment"), CASES)
def test_hostile_file_gives_one_line_error(files, command, name, maker, fragment):
    path = files(name, maker)
    assert_one_line_error(run_cli(command, path), command, fragment)


# -- the memory bombs, by name ------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_stride0_tensor_is_refused_by_its_declared_size(files, command):
    # A 1.5 KiB .pt with a stride-0 16000 x 16000 view made check and
    # calibrate materialise it: about 10 GB.
    path = files("stride0.pt", make_stride0_pt)
    proc = run_cli(command, path)
    assert_one_line_error(proc, command, path, "'logits' declares 1024000000 bytes", "over the limit of 67108864 bytes")


@pytest.mark.parametrize("command", COMMANDS)
def test_zip_bomb_is_refused_before_decompressing(files, command):
    # A 1 MiB .npz holding 1 GiB of deflated zeros made check and calibrate
    # inflate it and then copy it: about 10 GB.
    path = files("bomb.npz", make_bomb_npz)
    assert os.path.getsize(path) < 2**21
    proc = run_cli(command, path)
    assert_one_line_error(proc, command, path, "the zip member of 'logits' declares 1073741952 bytes", "over the limit")


def test_max_bytes_raises_the_limit(tmp_path):
    # The limit is an option: a file above the default loads when allowed.
    path = tmp_path / "wide.npz"
    rows = 2**13
    header = npy_header("<f4", (rows, 2048))
    data, crc = deflated_zeros(header, rows * 2048 * 4)
    member = {"name": "logits.npy", "data": data, "method": 8, "crc": crc, "size": len(header) + rows * 8192}
    path.write_bytes(raw_zip([member, {"name": "labels.npy", "data": npy_bytes(np.zeros(rows, np.int64))}]))
    assert_one_line_error(run_cli("check", str(path)), "check", "over the limit of 67108864 bytes")
    proc = run_cli("check", str(path), "--max-bytes", "80M")
    assert proc.returncode == 0, proc.stderr
    assert f"shape ({rows}, 2048) float32" in proc.stdout


def test_odd_file_name_stays_on_one_line(tmp_path):
    # A name with a newline would have split the error over two lines.
    path = tmp_path / "two\nlines.npy"
    path.write_bytes(b"not numpy")
    proc = run_cli("check", str(path))
    assert_one_line_error(proc, "check", repr(str(path)))


# -- nothing from a file runs -------------------------------------------------------


def _pickle_payloads(marker: str):
    import pickle

    payload = WritesMarker(marker)
    yield "pickle_as.npy", pickle.dumps(payload)
    code = "{'descr': __import__('builtins').open(%r, 'w') and '<f4', 'fortran_order': False, 'shape': (2,), }" % marker
    code += " " * (63 - (10 + len(code)) % 64) + "\n"
    yield "code_in_header.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(code)) + code.encode() + bytes(8)
    yield "object_array.npy", npy_bytes(np.array([payload], dtype=object), allow_pickle=True)
    buf = io.BytesIO()
    np.savez(buf, logits=np.array([payload], dtype=object), labels=np.zeros(1, np.int64))
    yield "object_array.npz", buf.getvalue()
    try:
        import torch
    except ImportError:
        return
    for name, zipped in (("payload.pt", True), ("payload_legacy.pt", False)):
        buf = io.BytesIO()
        torch.save({"logits": payload, "labels": torch.zeros(1)}, buf, _use_new_zipfile_serialization=zipped)
        yield name, buf.getvalue()


@pytest.mark.parametrize("command", COMMANDS)
def test_pickle_payloads_never_run(tmp_path, command):
    marker = str(tmp_path / "marker")
    for name, data in _pickle_payloads(marker):
        path = tmp_path / name
        path.write_bytes(data)
        proc = run_cli(command, str(path))
        assert_one_line_error(proc, command)
        assert not os.path.exists(marker), name
        if name.endswith(".pt"):
            # torch's refusal names the global the pickle asked for.
            assert "open" in proc.stderr and "not allowed" in proc.stderr, proc.stderr
