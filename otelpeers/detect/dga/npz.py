"""The arrays of a ``.npz`` model artefact, read with the standard library.

The detection process scores names one at a time and has no use for numpy except to open
the artefact; importing numpy costs it about 12 MB resident (its C core, OpenBLAS). An
``.npz`` file is a zip of ``.npy`` files, each a short header (a Python dict literal giving
dtype, order and shape) before the raw little-endian data. Only the few dtypes a model
artefact holds are accepted; anything else is refused with a message naming the array, so a
foreign or corrupt file fails clearly instead of scoring with garbage.
"""

from __future__ import annotations

import ast
import struct
import sys
import zipfile
from array import array
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"\x93NUMPY"
# npy dtype -> array typecode (a C type of that width here; parse_npy checks the data size)
_TYPECODES = {"<f8": "d", "<f4": "f", "<i4": "i", "<u4": "I", "<i8": "q"}
MAX_HEADER = 4096


class NpzFormatError(ValueError):
    """The file is not an ``.npz`` of plain numeric or text arrays."""


@dataclass(frozen=True, slots=True)
class NpyArray:
    """One array: its shape and its values flattened in C order."""

    shape: tuple[int, ...]
    values: array | list[str]

    def scalar(self) -> float | int | str:
        """The single value of a 0-d array."""
        if self.shape != ():
            raise NpzFormatError(f"expected a single value, found shape {self.shape}")
        return self.values[0]

    def rows(self) -> list[list[float]]:
        """A 2-d array as a list of rows of Python numbers."""
        if len(self.shape) != 2:
            raise NpzFormatError(f"expected a 2-d array, found shape {self.shape}")
        width = self.shape[1]
        return [list(self.values[i * width:(i + 1) * width]) for i in range(self.shape[0])]


def _header(raw: bytes, name: str) -> tuple[dict[str, object], int]:
    if raw[:6] != MAGIC or len(raw) < 10:
        raise NpzFormatError(f"{name}: not an .npy array (bad magic)")
    major = raw[6]
    if major == 1:
        (length,), start = struct.unpack_from("<H", raw, 8), 10
    elif major in (2, 3):
        (length,), start = struct.unpack_from("<I", raw, 8), 12
    else:
        raise NpzFormatError(f"{name}: .npy format version {major} is not supported")
    if length > MAX_HEADER or start + length > len(raw):
        raise NpzFormatError(f"{name}: .npy header of {length} bytes is truncated or too long")
    text = raw[start:start + length].decode("latin-1")
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise NpzFormatError(f"{name}: unreadable .npy header: {exc}") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise NpzFormatError(f"{name}: .npy header lacks descr/fortran_order/shape")
    return header, start + length


def parse_npy(raw: bytes, name: str = "array") -> NpyArray:
    """One ``.npy`` file's array (little-endian numbers or fixed-width text, C order)."""
    header, offset = _header(raw, name)
    descr, shape = header["descr"], header["shape"]
    if header["fortran_order"] is not False:
        raise NpzFormatError(f"{name}: Fortran-ordered arrays are not supported")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise NpzFormatError(f"{name}: bad shape {shape!r}")
    count = 1
    for dim in shape:
        count *= dim
    body = memoryview(raw)[offset:]
    if isinstance(descr, str) and descr.startswith("<U") and descr[2:].isdigit():
        width = int(descr[2:]) * 4  # UTF-32, NUL padded
        if len(body) != count * width:
            raise NpzFormatError(f"{name}: {len(body)} bytes of data, expected {count * width}")
        texts = [bytes(body[i * width:(i + 1) * width]).decode("utf-32-le").rstrip("\0")
                 for i in range(count)]
        return NpyArray(shape, texts)
    code = _TYPECODES.get(descr) if isinstance(descr, str) else None
    if code is None:
        raise NpzFormatError(f"{name}: dtype {descr!r} is not one a model artefact holds")
    values = array(code)
    if len(body) != count * values.itemsize:
        raise NpzFormatError(
            f"{name}: {len(body)} bytes of data, expected {count * values.itemsize}")
    values.frombytes(body)
    if sys.byteorder == "big":
        values.byteswap()
    return NpyArray(shape, values)


def read_npz(path: str | Path) -> dict[str, NpyArray]:
    """Every array of an ``.npz`` file by name (``bias.npy`` -> ``bias``)."""
    out: dict[str, NpyArray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise NpzFormatError(f"{path}: member {info.filename!r} is not an .npy")
                name = info.filename[:-4]
                out[name] = parse_npy(zf.read(info), f"{path}:{name}")
    except zipfile.BadZipFile as exc:
        raise NpzFormatError(f"{path}: not an .npz (zip) file: {exc}") from None
    return out
