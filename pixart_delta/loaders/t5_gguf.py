"""T5 encoders in GGUF files: llama.cpp's `t5encoder` architecture, as city96/t5-v1_1-xxl-encoder-gguf publishes
them (t5-v1_1-xxl-encoder-f16.gguf, -Q8_0, -Q6_K, -Q5_K_M, -Q4_K_M, ...). No ComfyUI here.

gguf-py (the `gguf` package, llama.cpp's own Python reader) parses the header and the metadata; tensor names go
back to transformers / ComfyUI T5 names through gguf-py's TensorNameMap (the table llama.cpp's converter named
them with, ggml-org/llama.cpp gguf-py/gguf/tensor_mapping.py); tensors are read a few rows at a time with plain
file reads and dequantised with gguf.quants.dequantize, so one piece at a time is resident, as t5.py reads
safetensors. The loader dequantises on load into the storage dtype (web/docs/PixArtT5Loader.md says why, with the
measurements).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from .file_cache import FileCache
from .files import CheckpointError, PieceReader, check_weight_file
from .identify import identify

log = logging.getLogger(__name__)

GGUF_EXT = (".gguf",)
# general.architecture values whose encoder is read: llama.cpp's encoder-only T5 and its encoder-decoder T5 (whose
# dec.* tensors are skipped); both name the encoder's tensors alike (ggml-org/llama.cpp gguf-py/gguf/constants.py)
T5_ARCHITECTURES = ("t5encoder", "t5")
GGUF_MAGIC = b"GGUF"
_BLOCK = re.compile(r"^enc\.blk\.(\d+)\.")
# the hyperparameters llama.cpp's converter writes for T5 (ggml-org/llama.cpp convert_hf_to_gguf.py, T5EncoderModel),
# under their config.json names, so that t5.t5_config checks them against the tensor shapes
_HPARAMS = {"d_model": ("LLM", "EMBEDDING_LENGTH"), "num_layers": ("LLM", "BLOCK_COUNT"),
            "d_ff": ("LLM", "FEED_FORWARD_LENGTH"), "vocab_size": ("LLM", "VOCAB_SIZE"),
            "num_heads": ("Attention", "HEAD_COUNT"), "d_kv": ("Attention", "KEY_LENGTH"),
            "relative_attention_num_buckets": ("Attention", "REL_BUCKETS_COUNT"),
            "layer_norm_epsilon": ("Attention", "LAYERNORM_RMS_EPS")}

_headers = FileCache(max_entries=4)


def gguf_module():
    try:
        import gguf
    except ImportError:
        raise CheckpointError("reading GGUF files needs the gguf package (llama.cpp's gguf-py): "
                              "pip install gguf") from None
    return gguf


@dataclass(frozen=True)
class GGUFTensor:
    key: str                  # the transformers / ComfyUI T5 name
    name: str                 # the GGUF name
    type_name: str            # GGML type: F32, F16, Q8_0, Q4_K, ...
    qtype: int                # gguf.GGMLQuantizationType value
    shape: tuple[int, ...]    # in torch order (GGUF lists dimensions innermost first)
    offset: int               # where its data starts in the file
    nbytes: int

    @property
    def dtype(self) -> torch.dtype:
        """What a read gives: F32 / F16 / BF16 tensors as stored, quantised ones dequantised to float32."""
        return {"F16": torch.float16, "BF16": torch.bfloat16}.get(self.type_name, torch.float32)


@dataclass(frozen=True)
class GGUFT5Header:
    path: Path
    architecture: str
    config: dict                       # the T5 hyperparameters of the metadata, in config.json names
    tensors: tuple[GGUFTensor, ...]    # the encoder's tensors, in file order


def _scalar(gguf, field):
    """A scalar metadata value (str, int, float, bool), or None for a missing field or an array."""
    if field is None or not field.types or field.types[0] == gguf.GGUFValueType.ARRAY:
        return None
    value = field.parts[field.data[0]]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(value).decode("utf-8", errors="replace")
    return value.tolist()[0]


def _not_gguf_hint(head: bytes) -> str:
    if head[:4] == b"PK\x03\x04":
        return "; this looks like a PyTorch (zip) checkpoint"
    if head[:1] == b"\x80":
        return "; this looks like a pickle file"
    if len(head) >= 9 and head[8:9] == b"{":
        return "; this looks like a safetensors file"
    return ""


def _t5_names(gguf, n_blocks: int) -> dict[str, list[str]]:
    """GGUF tensor name (without .weight) -> the transformers T5 names gguf-py's TensorNameMap gives it."""
    mapping = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5ENCODER, n_blocks).mapping
    names: dict[str, list[str]] = {}
    for hf_name, (_kind, gguf_name) in mapping.items():
        if hf_name != gguf_name and hf_name.startswith(("shared", "encoder.")):  # other families' aliases left out
            names.setdefault(gguf_name, []).append(hf_name)
    return names


def _hf_key(name: str, names: dict[str, list[str]], gated_blocks: set[int]) -> str | None:
    base, dot, suffix = name.rpartition(".")
    if not dot or suffix not in ("weight", "bias"):
        base, suffix = name, ""
    candidates = names.get(base)
    if not candidates:
        return None
    if len(candidates) > 1:  # ffn_up: wi_1 beside a gate (T5 v1.1, gated GELU), wi without one (T5 1.0, ReLU)
        m = _BLOCK.match(name)
        gated = m is not None and int(m.group(1)) in gated_blocks
        candidates = [c for c in candidates if c.endswith("_1") == gated] or candidates
    return candidates[0] + ("." + suffix if suffix else "")


def _readable(gguf, qtype, type_name: str) -> bool:
    if type_name in ("F32", "F16", "BF16"):
        return True
    if type_name in ("F64", "I8", "I16", "I32", "I64"):
        return False
    import numpy as np
    _block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def _read_header(path: Path) -> GGUFT5Header:
    size = check_weight_file(path, safetensors=True)  # empty, too short or text; GGUF, like safetensors, is never text
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] != GGUF_MAGIC:
        raise CheckpointError(f"{path}: not a GGUF file: it begins with {head[:4]!r}, expected the GGUF magic "
                              f"{GGUF_MAGIC!r}{_not_gguf_hint(head)}")
    gguf = gguf_module()
    try:
        reader = gguf.GGUFReader(str(path))
    except MemoryError:
        raise
    except Exception as e:  # gguf-py raises ValueError, IndexError, KeyError... for a file cut short or damaged
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot read the GGUF file ({why}); it is truncated or damaged "
                              f"({size:,} bytes; download it again)") from None
    try:
        if reader.byte_order != "I":
            raise CheckpointError(f"{path}: a big-endian GGUF file; expected a little-endian one (as llama.cpp and "
                                  f"city96/t5-v1_1-xxl-encoder-gguf publish them)")
        names = [t.name for t in reader.tensors]
        arch = _scalar(gguf, reader.get_field(gguf.Keys.General.ARCHITECTURE))
        if arch not in T5_ARCHITECTURES:
            found = identify(names)
            kind = f" (its tensors look like {found.description})" if found.known else ""
            held = f"a {arch!r} model" if arch else "a model without general.architecture"
            raise CheckpointError(
                f"{path}: this GGUF holds {held}{kind}, not a T5 encoder: found {found.found()}; expected "
                f"general.architecture {T5_ARCHITECTURES[0]!r} with llama.cpp's T5 tensors (token_embd.weight, "
                f"enc.blk.N.attn_q.weight, ...), as in city96/t5-v1_1-xxl-encoder-gguf")
        config = {}
        for name, (group, attr) in _HPARAMS.items():
            value = _scalar(gguf, reader.get_field(getattr(getattr(gguf.Keys, group), attr).format(arch=arch)))
            if value is not None:
                config[name] = value
        blocks = [int(m.group(1)) for n in names if (m := _BLOCK.match(n))]
        t5_names = _t5_names(gguf, max([config.get("num_layers", 0), *(b + 1 for b in blocks)]))
        gated = {int(m.group(1)) for n in names if (m := _BLOCK.match(n)) and ".ffn_gate." in n}
        tensors, unread, readable = [], [], {}
        for t in reader.tensors:
            key = _hf_key(t.name, t5_names, gated)
            if key is None:
                unread.append(t.name)
                continue
            qtype = gguf.GGMLQuantizationType(int(t.tensor_type))
            if qtype not in readable:
                readable[qtype] = _readable(gguf, qtype, qtype.name)
            if not readable[qtype]:
                from importlib.metadata import version
                raise CheckpointError(f"{path}: tensor {t.name} is stored as {qtype.name}, which gguf "
                                      f"{version('gguf')} cannot dequantise; expected F32, F16, BF16 or a "
                                      f"quantisation type gguf-py reads (Q8_0, Q6_K, Q5_K, Q4_K, ...)")
            end = int(t.data_offset) + int(t.n_bytes)
            if end > size:
                raise CheckpointError(f"{path}: truncated: tensor {t.name} ends at byte {end:,} but the file has "
                                      f"{size:,} bytes (download it again)")
            tensors.append(GGUFTensor(key=key, name=t.name, type_name=qtype.name, qtype=int(qtype),
                                      shape=tuple(int(d) for d in reversed(t.shape.tolist())),
                                      offset=int(t.data_offset), nbytes=int(t.n_bytes)))
        if unread:
            log.debug("%s: not part of the T5 encoder, not read: %s", path, ", ".join(unread[:8]))
    finally:
        del reader  # closes its memory map
    return GGUFT5Header(path=path, architecture=arch, config=config,
                        tensors=tuple(sorted(tensors, key=lambda t: t.offset)))


def read_gguf_header(path) -> GGUFT5Header:
    """The T5 encoder a GGUF file holds (architecture, hyperparameters, tensors), without reading weights; cached
    while the file stays the same."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    return _headers.get(path, "t5", lambda: _read_header(path))


def gguf_tensor_meta(path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """T5 name -> (shape, dtype a read gives), as t5.tensor_meta returns for the other formats."""
    return {t.key: (t.shape, t.dtype) for t in read_gguf_header(path).tensors}


def iter_gguf_pieces(path, wanted: Callable[[str], bool], piece_bytes: int | None = None
                     ) -> Iterator[tuple[str, tuple[int, ...], int, torch.Tensor]]:
    """(T5 name, full shape, first row, rows) for the wanted tensors, in pieces of about `piece_bytes` of output
    (whole tensors when None): F32 / F16 / BF16 as stored, quantised types dequantised to float32 by gguf-py.
    A piece is valid only until the next one is read (they share a read buffer)."""
    path = Path(path)
    header = read_gguf_header(path)
    gguf = gguf_module()
    import numpy as np
    reader = PieceReader(reuse=piece_bytes is not None)
    # our own read loop: gguf-py's tensors are views of one memory map, whose touched pages would stay resident
    with open(path, "rb") as fh:
        for t in header.tensors:
            if not wanted(t.key):
                continue
            rows = t.shape[0] if len(t.shape) > 1 else 1
            row_bytes = t.nbytes // rows
            out_row_bytes = (torch.Size(t.shape).numel() // rows) * t.dtype.itemsize
            step = rows if piece_bytes is None else max(1, piece_bytes // max(out_row_bytes, 1))
            fh.seek(t.offset)
            for r0 in range(0, rows, step):
                n = min(step, rows - r0)
                size = n * row_bytes
                buf = reader.read(fh, size)
                if buf is None:
                    raise CheckpointError(f"{path}: tensor {t.name} ends past the end of the file; truncated "
                                          f"(download it again)")
                shape = (n, *t.shape[1:]) if len(t.shape) > 1 else t.shape
                if t.type_name in ("F32", "F16", "BF16"):
                    piece = torch.frombuffer(buf, dtype=t.dtype, count=size // t.dtype.itemsize).reshape(shape)
                else:
                    blocks = np.frombuffer(buf, dtype=np.uint8, count=size).reshape(n, row_bytes)
                    piece = torch.from_numpy(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(t.qtype)))
                    piece = piece.reshape(shape)
                yield t.key, t.shape, r0, piece
                del piece
