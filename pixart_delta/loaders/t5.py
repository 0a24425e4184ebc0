"""T5 text encoders for PixArt: single files (ComfyUI `t5xxl_fp16` / `t5xxl_fp8_e4m3fn`, HF `model.safetensors`,
llama.cpp GGUF `t5-v1_1-xxl-encoder-Q8_0.gguf`, read by t5_gguf.py) and sharded Hugging Face folders
(`model.safetensors.index.json` or `pytorch_model.bin.index.json` + shards).

Weights are read tensor by tensor with plain file reads (safetensors' mmap would keep every touched page of a
10 GB shard resident while the file is open), converted to the storage dtype and copied into ComfyUI's own T5
(comfy.text_encoders.t5) right away, so peak memory stays near the final weight size.

No ComfyUI here: t5_comfy.py builds the CLIP, t5_prompt.py prepares prompts as diffusers does.
"""
from __future__ import annotations

import json
import logging
import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .files import PieceReader, PICKLE_EXT, SAFETENSORS_EXT, CheckpointError, load_state_dict, read_safetensors_header, sniff_text
from .identify import T5_LOADER, identify
from .t5_gguf import GGUF_EXT, gguf_tensor_meta, iter_gguf_pieces, read_gguf_header

log = logging.getLogger(__name__)

INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
              "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
# Prefixes under which T5 weights appear in files that were saved from a bigger container.
_PREFIXES = ("text_encoders.t5xxl.transformer.", "t5xxl.transformer.", "text_encoder.", "transformer.")
_SHARD_NAME = re.compile(r"-\d{5}-of-(\d{5})\.[A-Za-z]+$")
_PROBE = "encoder.block.0.layer.0.SelfAttention.q.weight"
# ComfyUI's T5 attention and layer norms have these hard-wired (comfy/text_encoders/t5.py).
COMFY_REL_BUCKETS, COMFY_REL_MAX_DISTANCE = 32, 128
COMFY_LAYER_NORM_EPS = 1e-6


@dataclass
class T5Source:
    """What a user's choice (a file, any shard of a set, or a folder) resolves to."""
    chosen: Path
    files: list[Path]                       # weight files in load order (one for a single file)
    index: Path | None = None               # the *.index.json of a sharded set
    hf_config: dict | None = None           # config.json beside the weights, when present; a GGUF's metadata
    weight_map: dict[str, str] = field(default_factory=dict)
    config_name: str = "config.json"        # where hf_config comes from, for messages

    @property
    def sharded(self) -> bool:
        return self.index is not None

    @property
    def gguf(self) -> bool:
        return self.files[0].suffix.lower() in GGUF_EXT


def _read_json(path: Path, what: str) -> dict:
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: the {what} is empty (0 bytes); expected a JSON file (download it again)")
        text = sniff_text(path)
        if text is not None and text[0] in ("html", "xml", "lfs"):
            raise CheckpointError(f"{path}: the {what}: {text[1]}")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the {what} ({e}); expected a JSON file") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: the {what} holds a {type(data).__name__}, expected a JSON object")
    return data


def _indexes_in(folder: Path) -> list[Path]:
    """Shard indexes in a folder, the safetensors one first (HF repos often hold both formats)."""
    named = [folder / n for n in INDEX_NAMES if (folder / n).is_file()]
    return named + [p for p in sorted(folder.glob("*.index.json")) if p not in named]


def _shard_names(index: Path) -> list[str]:
    wm = _read_json(index, "shard index").get("weight_map")
    return list(dict.fromkeys(wm.values())) if isinstance(wm, dict) else []


def _is_weight_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in SAFETENSORS_EXT + PICKLE_EXT + GGUF_EXT


def resolve_t5_source(path) -> T5Source:
    """A single T5 file, or the whole sharded set that `path` (its folder, its index, or any shard) belongs to."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder; expected a T5 weight file or a Hugging Face "
                              f"text_encoder folder")
    folder = path if path.is_dir() else path.parent
    index = None
    if path.is_dir():
        indexes = _indexes_in(folder)
        if indexes:  # the first whose shards are all there, else the first (its missing shards get reported)
            complete = [i for i in indexes if all((folder / n).is_file() for n in _shard_names(i))]
            index = (complete or indexes)[0]
        else:
            weights = sorted(p for p in folder.iterdir() if _is_weight_file(p))
            safe = [p for p in weights if p.suffix.lower() in SAFETENSORS_EXT]
            if len(safe) == 1 or len(weights) == 1:
                path = (safe or weights)[0]
            else:
                raise CheckpointError(
                    f"{folder}: found {len(weights)} weight files ({', '.join(p.name for p in weights[:6]) or 'none'}) "
                    f"and no {' / '.join(INDEX_NAMES)}; expected a sharded Hugging Face folder with its index, or "
                    f"one T5 weight file")
    elif path.name.endswith(".index.json"):
        index = path
    else:
        indexes = _indexes_in(folder)
        index = next((i for i in indexes if path.name in _shard_names(i)), None)
        if index is None and _SHARD_NAME.search(path.name):
            raise CheckpointError(
                f"{path}: this is one shard of a set of {int(_SHARD_NAME.search(path.name).group(1))}, but "
                f"{folder} has no index naming it (found {', '.join(i.name for i in indexes) or 'no *.index.json'}); "
                f"expected {' or '.join(INDEX_NAMES)} beside the shards (download it with them)")

    if index is None and path.suffix.lower() in GGUF_EXT:  # a GGUF holds its own hyperparameters
        return T5Source(chosen=path, files=[path], hf_config=read_gguf_header(path).config,
                        config_name="the GGUF metadata")
    cfg_path = folder / "config.json"
    hf_config = _read_json(cfg_path, "T5 config") if cfg_path.is_file() else None
    if index is None:
        return T5Source(chosen=path, files=[path], hf_config=hf_config)

    data = _read_json(index, "shard index")
    wm = data.get("weight_map")
    if not isinstance(wm, dict) or not wm:
        found = "no 'weight_map'" if "weight_map" not in data else f"a 'weight_map' that lists no shards ({wm!r})"
        raise CheckpointError(f"{index}: the shard index names no weight files: it has {found}; expected a Hugging "
                              f"Face shard index ({{\"weight_map\": {{tensor name: shard file}}}}; download it again)")
    files, seen = [], set()
    for name in wm.values():
        if name not in seen:
            seen.add(name)
            files.append(folder / name)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        present = sorted(p.name for p in folder.iterdir() if _is_weight_file(p))
        raise CheckpointError(
            f"{folder}: the sharded T5 is incomplete: {index.name} lists {len(files)} shards but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing (found: {', '.join(present) or 'none'}); "
            f"expected every shard named in the index (download the missing file(s))")
    return T5Source(chosen=path, files=files, index=index, hf_config=hf_config, weight_map=dict(wm))


def normalize_key(key: str) -> str:
    for p in _PREFIXES:
        if key.startswith(p):
            key = key[len(p):]
            break
    if key == "encoder.embed_tokens.weight":  # tied to shared.weight in T5; some files keep only this name
        return "shared.weight"
    return key


def _st_dtype(path: Path, key: str, name: str) -> torch.dtype:
    try:
        return _ST_DTYPES[name]
    except KeyError:
        raise CheckpointError(f"{path}: tensor {key} has dtype {name}; expected one of {', '.join(_ST_DTYPES)}") from None


def tensor_meta(files: list[Path]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Normalized key -> (shape, dtype) over all files, without reading weights (pickles are memory-mapped)."""
    meta = {}
    for f in files:
        if f.suffix.lower() in SAFETENSORS_EXT:
            for k, v in read_safetensors_header(f).items():
                if k != "__metadata__":
                    meta.setdefault(normalize_key(k), (tuple(v["shape"]), _st_dtype(f, k, v["dtype"])))
        elif f.suffix.lower() in GGUF_EXT:
            for k, v in gguf_tensor_meta(f).items():
                meta.setdefault(k, v)
        else:
            sd = load_state_dict(f)
            for k, v in sd.items():
                if isinstance(v, torch.Tensor):
                    meta.setdefault(normalize_key(k), (tuple(v.shape), v.dtype))
            del sd
    return meta


def iter_pieces(path: Path, wanted: Callable[[str], bool], piece_bytes: int | None = None
                ) -> Iterator[tuple[str, tuple[int, ...], int, torch.Tensor]]:
    """(normalized key, full shape, first row, rows) for the wanted tensors of one file, in pieces of about
    `piece_bytes` (whole tensors when None), so that at most one piece is resident at a time.

    Whole tensors are read with plain file reads. Pieces come from a memory map whose pages are released
    (madvise DONTNEED) once the next piece is asked for, where the OS has madvise; elsewhere from one reused
    read buffer. Either way a piece is valid only until the next one is read."""
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_EXT:
        header = read_safetensors_header(path)
        items = sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0])
        reader = PieceReader(reuse=piece_bytes is not None)
        with open(path, "rb") as fh:
            data_start = 8 + int.from_bytes(fh.read(8), "little")
            use_map = piece_bytes is not None and hasattr(mmap, "MADV_DONTNEED") and path.stat().st_size > 0
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) if use_map else None
            try:
                for k, v in items:
                    key = normalize_key(k)
                    if not wanted(key):
                        continue
                    dtype, shape = _st_dtype(path, k, v["dtype"]), tuple(v["shape"])
                    start, end = v["data_offsets"]
                    rows = shape[0] if shape else 1
                    row_bytes = (end - start) // rows if rows else 0
                    step = rows if not piece_bytes or not row_bytes else max(1, piece_bytes // row_bytes)
                    fh.seek(data_start + start)
                    for r0 in range(0, max(rows, 1), max(step, 1)):
                        n = min(step, rows - r0) if shape else 1
                        size = n * row_bytes if shape else end - start
                        count = size // dtype.itemsize
                        offset = data_start + start + r0 * row_bytes
                        if not size:
                            t = torch.empty(0, dtype=dtype)
                        elif mapped is not None:
                            t = torch.frombuffer(mapped, dtype=dtype, count=count, offset=offset)
                        else:
                            buf = reader.read(fh, size)
                            if buf is None:
                                raise CheckpointError(f"{path}: tensor {k} ends past the end of the file; truncated")
                            t = torch.frombuffer(buf, dtype=dtype, count=count)
                        yield key, shape, r0, t.reshape((n, *shape[1:]) if shape else shape)
                        del t
                        if mapped is not None and size:
                            lo = offset - offset % mmap.PAGESIZE
                            mapped.madvise(mmap.MADV_DONTNEED, lo, offset + size - lo)
            finally:
                if mapped is not None:
                    try:
                        mapped.close()
                    except BufferError:  # the caller still holds the last piece; the map closes with it
                        pass
    elif path.suffix.lower() in GGUF_EXT:
        yield from iter_gguf_pieces(path, wanted, piece_bytes)
    elif path.suffix.lower() in PICKLE_EXT:
        sd = load_state_dict(path)  # torch.load(weights_only=True): a pickle that would run code is refused
        for k in list(sd):
            t = sd.pop(k)
            key = normalize_key(k)
            if isinstance(t, torch.Tensor) and wanted(key):
                yield key, tuple(t.shape), 0, t
        del sd
    else:
        raise CheckpointError(f"{path}: unknown weight file type {path.suffix!r}; expected "
                              f"{', '.join(SAFETENSORS_EXT + PICKLE_EXT + GGUF_EXT)}")


def iter_tensors(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, torch.Tensor]]:
    """(normalized key, tensor) for the wanted keys of one file, one tensor in memory at a time."""
    for key, _shape, _r0, t in iter_pieces(path, wanted):
        yield key, t


def file_weight_dtype(src: T5Source, meta: dict) -> torch.dtype:
    """The dtype a file holds T5's weights in (`weight_dtype: default` keeps fp16 / bf16 / fp8): the final layer
    norm's (in ComfyUI's scaled-fp8 files the fp16 of everything but the fp8 linear weights); in a GGUF the first
    attention weight's, as llama.cpp keeps 1-D tensors F32 in every file type (quantised ones read as float32)."""
    if src.gguf:
        return meta[_PROBE][1]
    final = meta.get("encoder.final_layer_norm.weight")
    return (final or meta["shared.weight"])[1]


def _check_is_t5(meta: dict, where) -> None:
    if _PROBE not in meta or "shared.weight" not in meta:
        found = identify(meta)
        sample = ", ".join(found.examples) or "no tensors"
        kind = f" ({found.looks_like(T5_LOADER[0])})" if found.known else ""
        raise CheckpointError(f"{where}: not a T5 encoder{kind}: found keys like {sample}; "
                              f"expected T5 keys shared.weight and encoder.block.N.layer.0.SelfAttention.q.weight "
                              f"(transformers / ComfyUI t5xxl layout)")


def t5_config(meta: dict, hf_config: dict | None = None, where="T5", config_name: str = "config.json") -> dict:
    """The config for ComfyUI's T5 (keys of comfy/text_encoders/t5_config_xxl.json): from the HF config.json
    (or a GGUF's metadata, in config.json names) when there is one, with everything the weights can tell taken from
    (and checked against) their shapes."""
    _check_is_t5(meta, where)
    vocab, d_model = meta["shared.weight"][0]
    inner = meta[_PROBE][0][0]
    num_layers = 1 + max(int(k.split(".")[2]) for k in meta if k.startswith("encoder.block."))
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in meta
    ff_key = "encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"
    if ff_key not in meta:
        raise CheckpointError(f"{where}: T5 feed-forward weight {ff_key} not found; expected wi_0/wi_1 (T5 v1.1) or wi")
    d_ff = meta[ff_key][0][0]
    rel = meta.get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    if rel is None:
        raise CheckpointError(f"{where}: no encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight; "
                              f"expected T5's relative position bias in the first block")
    buckets, num_heads = rel[0]
    per_layer_bias = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in meta
    cfg = {"d_model": d_model, "vocab_size": vocab, "num_layers": num_layers, "num_heads": num_heads,
           "d_kv": inner // num_heads, "d_ff": d_ff, "is_gated_act": gated,
           "dense_act_fn": "gelu_pytorch_tanh" if gated else "relu",
           "model_type": "umt5" if per_layer_bias else "t5"}
    max_distance = COMFY_REL_MAX_DISTANCE
    if hf_config:
        # a GGUF names no activation: llama.cpp runs gated blocks with GELU and the others with ReLU, as the
        # shapes already say (ggml-org/llama.cpp src/models/t5-enc.cpp)
        act = hf_config.get("dense_act_fn") or hf_config.get("feed_forward_proj", "").replace("gated-", "")
        if act:
            act = {"gelu_new": "gelu_pytorch_tanh", "gelu": "gelu_pytorch_tanh",
                   "gelu_pytorch_tanh": "gelu_pytorch_tanh", "relu": "relu"}.get(act, act)
            if act not in ("gelu_pytorch_tanh", "relu"):
                raise CheckpointError(f"{where}: {config_name} asks for the activation {act!r}; ComfyUI's T5 "
                                      f"supports gelu_new (gated-gelu, T5 v1.1) and relu")
            cfg["dense_act_fn"] = act
        for k in ("d_model", "vocab_size", "num_layers", "num_heads", "d_kv", "d_ff"):
            if k in hf_config and hf_config[k] != cfg[k]:
                raise CheckpointError(f"{where}: {config_name} says {k}={hf_config[k]} but the weights have "
                                      f"{k}={cfg[k]}; expected a {config_name} that belongs to these weights")
        eps = hf_config.get("layer_norm_epsilon")
        if eps is not None and abs(eps - COMFY_LAYER_NORM_EPS) > 1e-4 * COMFY_LAYER_NORM_EPS:
            raise CheckpointError(f"{where}: {config_name} says layer_norm_epsilon={eps:g}; ComfyUI's T5 uses "
                                  f"{COMFY_LAYER_NORM_EPS:g} (all T5 v1.1 models)")
        buckets = hf_config.get("relative_attention_num_buckets", buckets)
        max_distance = hf_config.get("relative_attention_max_distance", max_distance)
    if buckets != COMFY_REL_BUCKETS or max_distance != COMFY_REL_MAX_DISTANCE:
        raise CheckpointError(f"{where}: relative attention with {buckets} buckets / max distance {max_distance}; "
                              f"expected {COMFY_REL_BUCKETS} / {COMFY_REL_MAX_DISTANCE} (all T5 v1.1 models)")
    return cfg
