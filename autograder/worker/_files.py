"""What is wrong with a file a student's code saved, in words, before anything tries to load it.

A loader's own error on an empty or cut-short file misleads ("not a ZIP archive … torch.save pickles the Python
object" for a file of 0 bytes). These checks read only the file's size and framing, so they say what is there: an
empty file, an archive that stops before its end, or another format. They only ever word a failure; whether a
file is right is decided by loading and running it in a verifier.
"""
from __future__ import annotations

import os
import zipfile

PICKLE_PROTOCOL = b"\x80"   # the first byte of a pickle (protocol 2 and later)


def status(path: str, kind: str) -> str | None:
    """The grader functions' way to say it: "nofile PATH" when nothing was saved there, "badfile PATH: WORDS" when
    what was saved is not a `kind` file, or None when the framing is sound."""
    if not os.path.isfile(path):
        return f"nofile {path}"
    words = problem(path, kind)
    return f"badfile {path}: {words}" if words else None


def problem(path: str, kind: str) -> str | None:
    """`kind` is "zip" (TorchScript, torch.export's .pt2), "torch.save" (a ZIP archive, or the legacy plain pickle
    that torch.load also reads) or "tflite" (a FlatBuffer tagged TFL3)."""
    size = os.path.getsize(path)
    if size == 0:
        return "empty (0 bytes): the save wrote nothing, or the file was opened again for writing after it"
    with open(path, "rb") as f:
        head = f.read(8)
    if kind == "torch.save" and head[:1] == PICKLE_PROTOCOL:
        return None
    if kind in ("zip", "torch.save"):
        if not head.startswith(b"PK\x03\x04"):
            found = "a plain pickle" if head[:1] == PICKLE_PROTOCOL else f"bytes that begin {head!r}"
            return f"not a ZIP archive but {found} ({size:,} bytes)"
        if not zipfile.is_zipfile(path):
            return (f"a truncated ZIP archive ({size:,} bytes that stop before the archive's directory): the write "
                    f"was cut short")
        try:
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            return f"a damaged ZIP archive ({size:,} bytes: {e})"
        if broken is not None:
            return f"a damaged ZIP archive ({size:,} bytes; its member {broken} does not match its checksum)"
        return None
    if kind == "tflite":
        if size < 8 or head[4:8] != b"TFL3":
            return f"not a TensorFlow Lite model ({size:,} bytes without the TFL3 tag a converted model carries)"
        return None
    raise ValueError(f"unknown file kind {kind!r}")
