"""Saving and loading named arrays as ``.npz``: atomic writes, checked and bounded reads.

A save never damages the previous file: the archive is written beside the
target under a temporary name, flushed to disk and renamed over it. A load
trusts nothing in the file: every member's name, shape and dtype are checked
against what the caller expects from the ``.npy`` headers alone, before any
array data is decompressed, and only the expected bytes are read, so a small
crafted file cannot make it allocate or inflate more than the model's size.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import zipfile
import zlib

import numpy as np

__all__ = ["npz_path", "save", "load"]


def npz_path(path) -> str:
    """`path` as a str with ``.npz`` appended unless it ends with it (``np.savez``'s rule)."""
    path = os.fsdecode(os.fspath(path))
    return path if path.endswith(".npz") else path + ".npz"


def _fsync_directory(directory: str) -> None:
    """Make a rename in `directory` durable (POSIX; elsewhere a rename cannot be synced)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` to ``npz_path(path)`` as an uncompressed ``.npz``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
    arrays : dict of str to ndarray
        Member ``"key.npy"`` holds ``arrays["key"]``; numeric dtypes only.

    Raises
    ------
    FileNotFoundError
        If the directory of `path` does not exist.
    OSError
        If writing fails (e.g. a full disk); the previous file is intact and
        the temporary file removed.
    """
    path = npz_path(path)
    # Through a symbolic link, replace the file it points to, as writing would.
    target = os.path.realpath(path) if os.path.islink(path) else path
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} does not exist")
    temporary = os.path.join(
        directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp"
    )
    # Mode 0o666 lets the umask decide the permissions, as for any new file.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, 0o666)
    try:
        with open(fd, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _read_header(file):
    """Shape, Fortran order and dtype from the ``.npy`` header at the start of `file`."""
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(file)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(file)
    raise ValueError(f"unsupported .npy format version {version}, expected 1.0 or 2.0")


# What reading a malformed member can raise (bad CRC, bad deflate stream, short
# or bad header, encryption, unknown compression).
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError,
                NotImplementedError)


@contextlib.contextmanager
def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, key: str):
    """Open a member; every way it can be malformed becomes a ValueError naming it."""
    try:
        with archive.open(info) as file:
            yield file
    except _READ_ERRORS as exc:
        raise ValueError(f"{path!r}: member {key!r} is not a valid .npy array ({exc})") from None


def _describe_dtype(dtype: np.dtype) -> str:
    if dtype.hasobject:
        return f"{dtype} (pickled Python objects, which would need allow_pickle; never loaded)"
    return str(dtype)


def load(path, expected: dict[str, np.ndarray], owners: dict[str, str]) -> dict[str, np.ndarray]:
    """Read the arrays of `expected` from the ``.npz`` at ``npz_path(path)``, checking everything.

    Parameters
    ----------
    path : str or os.PathLike
    expected : dict of str to ndarray
        The arrays the archive must hold, exactly: same keys, shapes and
        dtypes (a byte-swapped float of the same kind is accepted).
    owners : dict of str to str
        For error messages: who holds each key, e.g. ``"layer 'block.conv1' (Conv2D)"``.

    Returns
    -------
    dict of str to ndarray
        New arrays, one per key of `expected`; nothing else is read.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file: not a zip archive (a text, empty or truncated file),
        a member that is not a ``.npy``, a missing, unexpected or duplicated
        key, another shape or dtype, more or fewer data bytes than the header
        declares, or corrupt data.
    """
    given = os.fsdecode(os.fspath(path))
    path = npz_path(given)
    if not os.path.exists(path):
        hint = ""
        if path != given:
            hint = f" (like save, load adds .npz to {given!r}"
            hint += ", which exists: rename it)" if os.path.exists(given) else ")"
        raise FileNotFoundError(f"no such file: {path!r}{hint}")
    mismatch = f"{path!r} does not match the model:"
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        what = "it is empty" if os.path.getsize(path) == 0 else f"not a zip archive ({exc})"
        raise ValueError(
            f"{path!r} is not an .npz archive written by save: {what}; "
            "is it another format, or truncated?"
        ) from None
    with archive:
        members = {}
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"{mismatch} unexpected member {info.filename!r} (not an array)")
            key = info.filename[: -len(".npy")]
            if key in members:
                raise ValueError(f"{path!r} holds key {key!r} twice")
            members[key] = info
        for key in expected:
            if key not in members:
                raise ValueError(f"{mismatch} missing key {key!r} of {owners[key]}")
        for key in members:
            if key not in expected:
                raise ValueError(
                    f"{mismatch} unexpected key {key!r} (the model has no such array)"
                )

        # Every header first: nothing is decompressed past a header until all fit.
        layouts = {}
        for key, target in expected.items():
            info = members[key]
            with _member(archive, info, path, key) as file:
                shape, fortran_order, dtype = _read_header(file)
                header_size = file.tell()
            if shape != target.shape or dtype.newbyteorder("=") != target.dtype:
                raise ValueError(
                    f"{mismatch} {key!r} has shape {shape} and dtype {_describe_dtype(dtype)}, "
                    f"the model expects {target.shape} and {target.dtype} for {owners[key]}"
                )
            data_size = info.file_size - header_size
            if data_size != target.nbytes:
                raise ValueError(
                    f"{path!r}: member {key!r} holds {data_size} bytes of data, its header "
                    f"declares {target.nbytes} (shape {shape}, dtype {dtype}); refusing it"
                )
            layouts[key] = header_size, dtype, fortran_order

        loaded = {}
        for key, target in expected.items():
            header_size, dtype, fortran_order = layouts[key]
            with _member(archive, members[key], path, key) as file:
                file.read(header_size)
                data = file.read(target.nbytes)
                # Reading to the end checks the CRC; a longer stream is refused.
                if len(data) != target.nbytes or file.read(1):
                    raise ValueError("its data stream is not the size its directory entry says")
            order = "F" if fortran_order else "C"
            loaded[key] = np.frombuffer(data, dtype).reshape(target.shape, order=order)
    return loaded
