"""Reading weight files safely, with errors that name the file and say what was wrong."""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
from pathlib import Path

import torch

SAFETENSORS_EXT = (".safetensors", ".sft")
PICKLE_EXT = (".pth", ".pt", ".bin", ".ckpt")


def _safetensors_reads_owned() -> bool:
    import inspect
    import safetensors.torch
    return "backend" in inspect.signature(safetensors.torch.load_file).parameters   # safetensors >= 0.8


SAFETENSORS_READS_OWNED = _safetensors_reads_owned()


class CheckpointError(ValueError):
    """A weight file that cannot be used; the message names the file, what was found and what was expected."""


def read_safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file, checked against the file size (catches truncation)."""
    path = Path(path)
    size = check_weight_file(path, safetensors=True)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: {size} bytes, too short to be a safetensors file (expected an 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            pickled = _pickle_container(path, head)
            if pickled:
                raise CheckpointError(misnamed_pickle_message(path, pickled))
            raise CheckpointError(f"{path}: header says {n} bytes of JSON but the file has {size} bytes; not a safetensors file, or truncated")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({e}); the file is damaged or not safetensors") from None
    entries = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else None
    if entries is None or not all(isinstance(v, dict) and len(v.get("data_offsets") or ()) == 2
                                  for v in entries.values()):
        raise CheckpointError(f"{path}: the safetensors header is JSON but not a table of tensors (expected "
                              f"{{name: {{dtype, shape, data_offsets}}}}); the file is damaged or not safetensors")
    end = max((v["data_offsets"][1] for v in entries.values()), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated: its tensors need {8 + n + end} bytes but the file has {size} "
                              f"(download it again)")
    return header


def _pickle_container(path: Path, head: bytes) -> str | None:
    """What torch.save wrote, when a file that should be safetensors begins like one: "zip" (torch >= 1.6,
    <archive>/data.pkl inside) or "pickle" (the legacy format: a pickle protocol 2-5 header); else None."""
    if head.startswith(b"PK\x03\x04"):
        import zipfile
        try:
            with zipfile.ZipFile(path) as z:
                return "zip" if any(n.endswith("data.pkl") for n in z.namelist()) else None
        except (zipfile.BadZipFile, OSError):
            return None
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return None


def misnamed_pickle_message(path: Path, container: str) -> str:
    kind = "a zip archive holding data.pkl" if container == "zip" else "a pickle stream"
    return (f"{path}: this is a PyTorch pickle file (torch.save: {kind}) under a {path.suffix} name, not "
            f"safetensors; ComfyUI's safetensors reader reports such files as 'HeaderTooLarge'. Rename it to "
            f"{path.stem}.pt: .pt files are read with torch.load(weights_only=True), which loads tensors only and "
            f"refuses anything that would run code")


def load_state_dict(path: str | os.PathLike, device="cpu") -> dict[str, torch.Tensor]:
    """Loads .safetensors, or .pth/.pt/.bin/.ckpt with torch.load(weights_only=True): a pickle that
    would run code is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix.lower() in SAFETENSORS_EXT:
        read_safetensors_header(path)
        import safetensors.torch
        try:
            if SAFETENSORS_READS_OWNED:
                # tensors in their own memory: memory-mapped ones keep the whole file's mapping (with every page
                # read, even of tensors dropped after a conversion) alive as long as one tensor is a weight
                return safetensors.torch.load_file(str(path), device=device, backend="pread")
            return safetensors.torch.load_file(str(path), device=device)
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: cannot read as safetensors: {e}") from None
    check_weight_file(path, safetensors=False)
    try:
        sd = torch.load(str(path), map_location=device, weights_only=True, mmap=_is_zip(path))
    except MemoryError:
        raise
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, IndexError, ...
        raise CheckpointError(_unreadable(path, e)) from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: found a {type(sd).__name__}, expected a dict of tensors")
    return sd


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


# ---- bad files: empty, cut short, text saved under a weight-file name, pickles that would run code ----

# No file this short holds a tensor: a safetensors header naming dtype, shape and data_offsets alone is
# ~50 bytes of JSON, and torch.load needs a zip container or a tensor-rebuild call.
MIN_WEIGHT_FILE_BYTES = 16
_SNIFF_BYTES = 4096


def check_weight_file(path: Path, safetensors: bool) -> int:
    """The file's size; CheckpointError when it is empty, too short, or a text file (web page, Git LFS
    pointer, JSON) under a weight-file name. Runs before torch or safetensors see the file."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes), not a weight file (download it again)")
    # any text is refused for safetensors (its first 8 bytes, a little-endian length, hold NUL bytes);
    # pickles of protocol 0 are text, so there only what is certainly no pickle is refused before torch reads it
    text = sniff_text(path)
    if text is not None and (safetensors or text[0] != "text"):
        raise CheckpointError(f"{path}: {text[1]}")
    if size < MIN_WEIGHT_FILE_BYTES:
        raise CheckpointError(f"{path}: {size} byte{'s' if size != 1 else ''}, too short to be a weight file "
                              f"(download it again)")
    return size


def _decode_text(head: bytes) -> str | None:
    """`head` as text when it is text (BOM allowed), else None."""
    cut = len(head) == _SNIFF_BYTES   # the last character may be cut in two
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            head, encoding = head[len(bom):], codec
            break
    else:
        encoding = "utf-8"
    text = head.decode(encoding, errors="replace")
    if cut:
        text = text[:-1]
    if not text or any(c == "\ufffd" or (ord(c) < 32 and c not in "\t\n\r\f") for c in text):
        return None
    return text


def sniff_text(path: Path) -> tuple[str, str] | None:
    """None for a binary file; for text (kind, what it is): kind "html", "xml", "lfs" (a Git LFS pointer),
    "json" or "text", and a sentence such as "this is an HTML page, not weights: ..."."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    text = _decode_text(head)
    if text is None:
        return None
    start = text.lstrip()
    low = start.lower()
    if low.startswith(("<!doctype html", "<html")) or (low.startswith("<") and "<html" in low):
        title = re.search(r"<title[^>]*>([^<]{1,120})", start, re.IGNORECASE)
        page = f" (page title: {' '.join(title.group(1).split())!r})" if title else ""
        return "html", (f"this is an HTML page, not weights{page}: the download saved a web page (log in / "
                        f"accept the licence, then download again)")
    if low.startswith("<?xml") or low.startswith("<error"):
        return "xml", (f"this is an XML document, not weights (often a storage server's error reply: "
                       f"{' '.join(start[:160].split())!r}); download the file again")
    if low.startswith("version https://git-lfs.github.com/spec/"):
        size = re.search(r"^size (\d+)", start, re.MULTILINE)
        real = f" for a {int(size.group(1)):,}-byte file" if size else ""
        return "lfs", (f"this is a Git LFS pointer file{real}, not weights: the repository was cloned without Git "
                       f"LFS; run `git lfs pull` in the clone or download the file itself")
    if low.startswith(("{", "[")):
        return "json", (f"this is a JSON text file, not weights (it begins {' '.join(start[:120].split())!r}); "
                        f"expected the weight file itself (download it again)")
    return "text", (f"this is a text file, not weights (it begins {' '.join(start[:80].split())!r}); "
                    f"expected a binary weight file (download it again)")


def _unreadable(path: Path, error: Exception) -> str:
    """Why torch.load(weights_only=True) failed: a pickle that would call code (protocol-0 pickles are text,
    so that comes first), a text file, or damage."""
    named = _disallowed_globals(path) if isinstance(error, pickle.UnpicklingError) else []
    if not named:
        text = sniff_text(path)
        if text is not None:
            return f"{path}: {text[1]}"
        if not isinstance(error, pickle.UnpicklingError):
            return (f"{path}: cannot read as a PyTorch weight file ({_first_line(error)}); damaged or truncated? "
                    f"(download it again)")
    return _refusal(path, error, named)


def _refusal(path: Path, error: pickle.UnpicklingError, named: list[str]) -> str:
    message = str(error)
    named = named or re.findall(r"GLOBAL ([A-Za-z_][\w.]*\w)", message)
    if named:
        what = f"would call {', '.join(dict.fromkeys(named))} while loading, which plain weights never do"
    else:
        # torch's own text, without its advice to turn the safe loader off
        lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not re.search(
            r"weights.only|re-running|trusted|documentation|file an issue|WeightsUnpickler error", ln, re.I)]
        what = f"holds what the safe loader does not read ({lines[0][:160] if lines else type(error).__name__})"
    return (f"{path}: refused: this pickle file {what}; it was refused and not executed (only tensors and "
            f"plain containers are loaded). Get a .safetensors version of this model from a trusted source.")


def _pickle_bytes(path: Path) -> bytes:
    """The pickle of a torch zip file (<archive>/data.pkl), else the file's start."""
    import zipfile
    if _is_zip(path):
        try:
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                return z.read(name) if name else b""
        except (zipfile.BadZipFile, OSError):
            return b""
    with open(path, "rb") as f:
        return f.read(64 << 20)


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # what protocol 0-2 pickles write for them


def _disallowed_globals(path: Path) -> list[str]:
    """The functions and classes a pickle imports that torch's weights-only loader would refuse, read from its
    opcodes with pickletools (which parses, never runs)."""
    import io
    import pickletools
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except Exception:  # private API; without it every global outside torch and collections is named
        allowed = None
    registered = {f"{g.__module__}.{g.__qualname__}" for g in torch.serialization.get_safe_globals()
                  if hasattr(g, "__qualname__")}

    def refused(name: str) -> bool:
        if name in registered:
            return False
        return name not in allowed if allowed is not None else not name.startswith(("torch.", "collections."))

    found, strings, memo = [], [], {}
    stream = io.BytesIO(_pickle_bytes(path))
    try:
        for _ in range(4):  # legacy torch files hold a few pickles in a row
            for op, arg, _pos in pickletools.genops(stream):
                name = op.name
                if name in ("GLOBAL", "INST"):
                    module, _, attr = arg.partition(" ")
                    found.append(f"{_PY2_MODULES.get(module, module)}.{attr}")
                elif name == "STACK_GLOBAL" and len(strings) >= 2 and None not in strings[-2:]:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                if name == "MEMOIZE":
                    memo[len(memo)] = strings[-1] if strings else None
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = strings[-1] if strings else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    strings.append(memo.get(arg))
                elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
                              "BINSTRING", "SHORT_BINSTRING"):
                    strings.append(arg)
                elif name not in ("FRAME", "PROTO"):
                    strings.append(None)
            if stream.tell() >= len(stream.getbuffer()):
                break
    except Exception:  # the bytes after the last pickle (tensor data) or a damaged pickle
        pass
    return [g for g in dict.fromkeys(found) if refused(g)]


def unwrap(sd: dict) -> dict:
    """Training files wrap the weights: {"state_dict": ..., "state_dict_ema": ..., "optimizer": ...}."""
    for key in ("state_dict", "model", "module"):
        inner = sd.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in list(inner.values())[:8]):
            return inner
    return sd


def assign_weights(module: torch.nn.Module, sd: dict) -> tuple[list[str], list[str]]:
    """Makes the read tensors the module's weights instead of copying them into its own, so loading never holds a
    file's weights twice (torch.load's memory-mapped tensors stay mapped, read pages only). A tensor whose dtype
    differs from the module's weight is converted alone and replaces its source in `sd`, one at a time. Returns
    load_state_dict's (missing, unexpected) keys."""
    expected = module.state_dict()
    for key in list(sd):
        want = expected.get(key)
        if want is not None and sd[key].dtype != want.dtype:
            sd[key] = sd[key].to(want.dtype)
    return module.load_state_dict(sd, strict=False, assign=True)


class PieceReader:
    """Reads pieces of a file into a bytearray: one reused for every piece when the pieces are bounded (the caller
    drops each piece before asking for the next), a fresh one per piece otherwise."""

    def __init__(self, reuse: bool):
        self.reuse, self.buffer = reuse, bytearray(0)

    def read(self, fh, size: int) -> bytearray | None:
        """`size` bytes from `fh`, or None when the file ends first."""
        if not self.reuse or size > len(self.buffer):
            buf = bytearray(size)
            if self.reuse:
                self.buffer = buf
        else:
            buf = self.buffer
        return buf if fh.readinto(memoryview(buf)[:size]) == size else None
