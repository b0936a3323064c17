"""Saving and loading models: nested models, atomic saves, loads that trust nothing.

* nested models round-trip under dotted keys; a mismatch names the file and
  the dotted path of the layer;
* ``save("m")`` and ``load("m")`` both use ``m.npz``; a missing file is a
  FileNotFoundError naming it; a text, empty or truncated file, and every
  malformed member, is a ValueError naming the file and the problem;
* a save that fails (a full disk) or is killed (SIGKILL) leaves the previous
  file intact, and a failed one leaves no temporary file;
* a decompression bomb (a small file whose members declare or hold huge
  arrays) is refused from the headers, fast and without allocating.
"""

from __future__ import annotations

import errno
import io
import os
import re
import select
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import fastcnn
from fastcnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, ReLU, Residual
from fastcnn.model import Sequential


def nested(seed=0, channels=3):
    rng = np.random.default_rng(seed)
    return Sequential([
        Sequential([Conv2D(1, channels, 3, rng=rng), BatchNorm2D(channels)]),
        Residual(Sequential([ReLU(), Conv2D(channels, channels, 3, padding=1, rng=rng)])),
        Flatten(),
        Dense(channels * 6 * 6, 2, rng=rng),
    ])


KEYS = ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias", "0.1.running_mean",
        "0.1.running_var", "1.body.1.weight", "1.body.1.bias", "3.weight", "3.bias"]


def arrays(model):
    return {k: v.copy() for k, v in [*model.named_parameters(), *model.named_buffers()]}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def trained(model):
    model(np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32))
    for value in model.parameters():
        value += 0.5
    return model


def npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def write_archive(path, members, compression=zipfile.ZIP_STORED):
    """An .npz-like zip of ``{member name: bytes or iterable of byte chunks}``."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            with archive.open(name, "w", force_zip64=True) as file:
                for chunk in [data] if isinstance(data, bytes) else data:
                    file.write(chunk)


def good_members(model):
    return {f"{key}.npy": npy_bytes(value) for key, value in arrays(model).items()}


# ---------------------------------------------------------------------------
# Nested models, names and paths


def test_nested_model_round_trip_under_dotted_keys(tmp_path):
    source = trained(nested(0))
    source.save(tmp_path / "nested.npz")
    with zipfile.ZipFile(tmp_path / "nested.npz") as archive:
        assert sorted(archive.namelist()) == sorted(f"{k}.npy" for k in KEYS)
    target = nested(1)
    held = dict(target.named_parameters())
    target.load(tmp_path / "nested.npz")
    assert_same(arrays(target), arrays(source))
    assert all(value is held[key] for key, value in target.named_parameters())  # in place
    single = Dense(3, 2, rng=0)  # a bare layer saves its own arrays
    single.save(tmp_path / "dense")
    with zipfile.ZipFile(tmp_path / "dense.npz") as archive:
        assert sorted(archive.namelist()) == ["bias.npy", "weight.npy"]


@pytest.mark.parametrize("other, match", [
    (lambda: nested(channels=4),
     r"'0\.0\.weight' has shape \(4, 1, 3, 3\) and dtype float32, the model expects "
     r"\(3, 1, 3, 3\) and float32 for layer '0\.0' \(Conv2D\)"),
    (lambda: Sequential([*nested()[:1], Residual(Sequential([ReLU(), ReLU()])), *nested()[2:]]),
     r"missing key '1\.body\.1\.weight' of layer '1\.body\.1' \(Conv2D\)"),
    (lambda: Sequential([*nested(), ReLU(), Dense(2, 2, rng=0)]),
     r"unexpected key '5\.weight' \(the model has no such array\)"),
    (lambda: nested().astype(np.float64),
     r"'0\.0\.weight' has shape \(3, 1, 3, 3\) and dtype float64"),
])
def test_a_mismatch_names_the_file_and_the_layer_path(tmp_path, other, match):
    path = tmp_path / "other.npz"
    other().save(path)
    model = trained(nested())
    before = arrays(model)
    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + " does not match the model: "
                       + match):
        model.load(path)
    assert_same(arrays(model), before)


def test_save_and_load_agree_on_the_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = trained(nested())
    source.save("m")
    assert os.listdir(".") == ["m.npz"]
    for name in ("m", "m.npz", tmp_path / "m"):
        target = nested(2)
        target.load(name)
        assert_same(arrays(target), arrays(source))
    with pytest.raises(FileNotFoundError, match=r"no such file: 'missing\.npz'"):
        nested().load("missing")
    os.rename("m.npz", "plain")
    with pytest.raises(FileNotFoundError, match=r"'plain\.npz' \(like save, load adds .npz to "
                                                r"'plain', which exists: rename it\)"):
        nested().load("plain")


def good_file_bytes():
    buffer = io.BytesIO()
    np.savez(buffer, **arrays(nested()))
    return buffer.getvalue()


@pytest.mark.parametrize("content, what", [
    (b"", "it is empty"),
    (b"weights = [1, 2, 3]\n", "not a zip archive"),
    (np.random.default_rng(0).bytes(5000), "not a zip archive"),
    (good_file_bytes()[:-30], "not a zip archive"),  # truncated inside the directory
    (good_file_bytes()[: len(good_file_bytes()) // 2], "not a zip archive"),
    (npy_bytes(np.zeros(3)), "not a zip archive"),
], ids=["empty", "text", "random", "truncated-directory", "truncated-half", "npy"])
def test_a_file_that_is_no_archive_is_a_value_error_naming_it(tmp_path, content, what):
    path = tmp_path / "weights.npz"
    path.write_bytes(content)
    model = nested()
    before = arrays(model)
    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + " is not an .npz archive "
                       "written by save: " + what):
        model.load(path)
    assert_same(arrays(model), before)


def corrupt_member(path):
    """Flip one data byte of a stored member: its CRC no longer matches."""
    data = bytearray(path.read_bytes())
    offset = data.index(b"\x93NUMPY") + 200
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_member_problems_are_value_errors_naming_the_file(tmp_path):
    model = nested()
    path = tmp_path / "bad.npz"

    def refused(members, match):
        write_archive(path, members)
        with pytest.raises(ValueError, match=re.escape(repr(str(path))) + ".*" + match):
            model.load(path)

    good = good_members(model)
    refused({**good, "notes.txt": b"hello"}, r"unexpected member 'notes\.txt' \(not an array\)")
    weight = good["3.weight.npy"]
    refused({**good, "3.weight.npy": weight + b"\0" * 8},
            r"member '3\.weight' holds 872 bytes of data, its header declares 864")
    refused({**good, "3.weight.npy": weight[:-8]},
            r"member '3\.weight' holds 856 bytes of data, its header declares 864")
    refused({**good, "3.bias.npy": npy_bytes(np.array([1, "x"], dtype=object))},
            r"'3\.bias' has shape \(2,\) and dtype object \(pickled Python objects, which would "
            r"need allow_pickle; never loaded\)")
    refused({**good, "3.bias.npy": npy_bytes(np.zeros(2, np.int32))}, "dtype int32")
    refused({**good, "3.bias.npy": b"\x93NUMPY\x03\x00" + weight[8:]},
            r"member '3\.bias' is not a valid \.npy array \(unsupported \.npy format version")
    refused({**good, "3.bias.npy": b"not an npy file at all"},
            r"member '3\.bias' is not a valid \.npy array")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("3.bias.npy", good["3.bias.npy"])
    with pytest.raises(ValueError, match=r"holds key '3\.bias' twice"):
        model.load(path)
    write_archive(path, good)
    corrupt_member(path)
    with pytest.raises(ValueError, match=r"member '.*' is not a valid \.npy array \(Bad CRC-32"):
        model.load(path)
    assert_same(arrays(model), arrays(nested()))


def test_byte_swapped_and_fortran_order_members_load(tmp_path):
    source = trained(nested())
    members = good_members(source)
    weight = source[3].params["weight"]
    members["3.weight.npy"] = npy_bytes(np.asfortranarray(weight))
    members["3.bias.npy"] = npy_bytes(source[3].params["bias"].astype(">f4"))
    write_archive(tmp_path / "w.npz", members, zipfile.ZIP_DEFLATED)
    target = nested(5)
    target.load(tmp_path / "w.npz")
    assert_same(arrays(target), arrays(source))


# ---------------------------------------------------------------------------
# A decompression bomb


def zeros_chunks(mib):
    chunk = bytes(1 << 20)
    return (chunk for _ in range(mib))


def huge_header(shape, descr="<f4"):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize("bomb", ["declares a huge expected array", "holds a huge expected array",
                                  "adds a huge unexpected array"])
def test_a_decompression_bomb_is_refused_fast_without_allocating(tmp_path, bomb):
    model = nested()
    members = good_members(model)
    payload = zeros_chunks(32)  # 32 MiB of zeros: a few dozen KiB deflated
    if bomb == "declares a huge expected array":
        members["0.0.weight.npy"] = [huge_header((1 << 32, 4, 3, 3)), *payload]
        match = r"'0\.0\.weight' has shape \(4294967296, 4, 3, 3\)"
    elif bomb == "holds a huge expected array":
        members["0.0.weight.npy"] = [members["0.0.weight.npy"], *payload]
        match = r"member '0\.0\.weight' holds 33554540 bytes of data, its header declares 108"
    else:
        members = {"a.npy": [huge_header((1 << 40,), "<f8"), *payload], **members}
        match = r"unexpected key 'a'"
    path = tmp_path / "bomb.npz"
    write_archive(path, members, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match):
            model.load(path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5, elapsed
    assert peak < 1 << 20, peak  # the 32 MiB were never inflated


# ---------------------------------------------------------------------------
# Atomic saves


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch,
                                                                       failing):
    path = tmp_path / "model.npz"
    nested(0).save(path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "write":
        write_array = np.lib.format.write_array

        def write_half(fp, array, *args, **kwargs):  # the first member, then the disk is full
            write_array(fp, array, *args, **kwargs)
            monkeypatch.setattr(np.lib.format, "write_array", disk_full)

        monkeypatch.setattr(np.lib.format, "write_array", write_half)
    else:
        monkeypatch.setattr(os, failing, disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        trained(nested(1)).save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.npz"]
    assert path.read_bytes() == before
    target = nested(3)
    target.load(path)
    assert_same(arrays(target), arrays(nested(0)))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_save_checks_the_directory_and_keeps_the_umask(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory '.*no-such-dir' does not exist"):
        nested().save(tmp_path / "no-such-dir" / "m.npz")
    old = os.umask(0o027)
    try:
        nested().save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.name != "posix", reason="symbolic links need privileges on Windows")
def test_save_through_a_symbolic_link_replaces_the_file_it_points_to(tmp_path):
    nested(0).save(tmp_path / "real.npz")
    os.symlink("real.npz", tmp_path / "link.npz")
    source = trained(nested(1))
    source.save(tmp_path / "link.npz")
    assert os.path.islink(tmp_path / "link.npz")
    target = nested(2)
    target.load(tmp_path / "real.npz")
    assert_same(arrays(target), arrays(source))


SAVE_FOREVER = """
import sys
from fastcnn import Dense, Sequential
model = Sequential([Dense(1024, 1024, rng=1)])
print("saving", flush=True)
while True:
    model.save(sys.argv[1])
"""


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL and select() on pipes")
def test_sigkill_during_save_leaves_the_previous_file_loadable(tmp_path):
    path = tmp_path / "model.npz"
    Sequential([Dense(1024, 1024, rng=0)]).save(path)
    versions = [Dense(1024, 1024, rng=seed).params["weight"] for seed in (0, 1)]
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    delays = np.random.default_rng(0).uniform(0.0, 0.15, size=6)
    for delay in delays:
        proc = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(path)],
                                stdout=subprocess.PIPE, env=env, cwd=package_root)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready and proc.stdout.readline() == b"saving\n"
            time.sleep(delay)  # the child saves 4 MiB again and again: kill it mid-write
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        model = Sequential([Dense(1024, 1024, rng=2)])
        model.load(path)  # never a BadZipFile
        assert any(np.array_equal(model[0].params["weight"], v) for v in versions)
