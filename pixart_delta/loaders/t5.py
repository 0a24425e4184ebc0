"""T5 text encoders for PixArt: single files (ComfyUI `t5xxl_fp16` / `t5xxl_fp8_e4m3fn`, HF `model.safetensors`)
and sharded Hugging Face folders (`model.safetensors.index.json` or `pytorch_model.bin.index.json` + shards).

Weights are read tensor by tensor with plain file reads (safetensors' mmap would keep every touched page of a
10 GB shard resident while the file is open), converted to the storage dtype and copied into ComfyUI's own T5
(comfy.text_encoders.t5) right away, so peak memory stays near the final weight size.

Everything above `load_t5_clip` works without ComfyUI (the unit tests use it); `load_t5_clip` needs `comfy`.
"""
from __future__ import annotations

import html
import json
import logging
import mmap
import re
import urllib.parse as ul
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .files import PICKLE_EXT, SAFETENSORS_EXT, CheckpointError, load_state_dict, read_safetensors_header

log = logging.getLogger(__name__)

INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
FAMILY_TOKENS = {"alpha": 120, "sigma": 300}
WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                 "fp8_e4m3fn": torch.float8_e4m3fn}
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
              "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
# Prefixes under which T5 weights appear in files that were saved from a bigger container.
_PREFIXES = ("text_encoders.t5xxl.transformer.", "t5xxl.transformer.", "text_encoder.", "transformer.")
_SHARD_NAME = re.compile(r"-\d{5}-of-(\d{5})\.[A-Za-z]+$")
_PROBE = "encoder.block.0.layer.0.SelfAttention.q.weight"
# ComfyUI's T5 attention has these hard-wired (comfy/text_encoders/t5.py).
COMFY_REL_BUCKETS, COMFY_REL_MAX_DISTANCE = 32, 128


@dataclass
class T5Source:
    """What a user's choice (a file, any shard of a set, or a folder) resolves to."""
    chosen: Path
    files: list[Path]                       # weight files in load order (one for a single file)
    index: Path | None = None               # the *.index.json of a sharded set
    hf_config: dict | None = None           # config.json beside the weights, when present
    weight_map: dict[str, str] = field(default_factory=dict)

    @property
    def sharded(self) -> bool:
        return self.index is not None


def _read_json(path: Path, what: str) -> dict:
    try:
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
    return p.is_file() and p.suffix.lower() in SAFETENSORS_EXT + PICKLE_EXT


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

    cfg_path = folder / "config.json"
    hf_config = _read_json(cfg_path, "T5 config") if cfg_path.is_file() else None
    if index is None:
        return T5Source(chosen=path, files=[path], hf_config=hf_config)

    data = _read_json(index, "shard index")
    wm = data.get("weight_map")
    if not isinstance(wm, dict) or not wm:
        raise CheckpointError(f"{index}: no 'weight_map' in this index; expected a Hugging Face shard index "
                              f"({{\"weight_map\": {{key: shard file}}}})")
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
        reuse = bytearray(0)
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
                            if piece_bytes is None or size > len(reuse):
                                buf = bytearray(size)
                                if piece_bytes is not None:
                                    reuse = buf
                            else:
                                buf = reuse
                            if fh.readinto(memoryview(buf)[:size]) != size:
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
                              f"{', '.join(SAFETENSORS_EXT + PICKLE_EXT)}")


def iter_tensors(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, torch.Tensor]]:
    """(normalized key, tensor) for the wanted keys of one file, one tensor in memory at a time."""
    for key, _shape, _r0, t in iter_pieces(path, wanted):
        yield key, t


def _check_is_t5(meta: dict, where) -> None:
    if _PROBE not in meta or "shared.weight" not in meta:
        sample = ", ".join(list(meta)[:4]) or "no tensors"
        raise CheckpointError(f"{where}: not a T5 encoder: found keys like {sample}; expected T5 keys "
                              f"shared.weight and encoder.block.N.layer.0.SelfAttention.q.weight (transformers / "
                              f"ComfyUI t5xxl layout)")


def t5_config(meta: dict, hf_config: dict | None = None, where="T5") -> dict:
    """The config for ComfyUI's T5 (keys of comfy/text_encoders/t5_config_xxl.json): from the HF config.json
    when there is one, with everything the weights can tell taken from (and checked against) their shapes."""
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
        act = hf_config.get("dense_act_fn") or hf_config.get("feed_forward_proj", "").replace("gated-", "")
        act = {"gelu_new": "gelu_pytorch_tanh", "gelu": "gelu_pytorch_tanh", "gelu_pytorch_tanh": "gelu_pytorch_tanh",
               "relu": "relu"}.get(act, act)
        if act not in ("gelu_pytorch_tanh", "relu"):
            raise CheckpointError(f"{where}: config.json asks for the activation {act!r}; ComfyUI's T5 supports "
                                  f"gelu_new (gated-gelu, T5 v1.1) and relu")
        cfg["dense_act_fn"] = act
        for k in ("d_model", "vocab_size", "num_layers", "num_heads", "d_kv", "d_ff"):
            if k in hf_config and hf_config[k] != cfg[k]:
                raise CheckpointError(f"{where}: config.json says {k}={hf_config[k]} but the weights have {k}={cfg[k]}; "
                                      f"expected a config.json that belongs to these weights")
        buckets = hf_config.get("relative_attention_num_buckets", buckets)
        max_distance = hf_config.get("relative_attention_max_distance", max_distance)
    if buckets != COMFY_REL_BUCKETS or max_distance != COMFY_REL_MAX_DISTANCE:
        raise CheckpointError(f"{where}: relative attention with {buckets} buckets / max distance {max_distance}; "
                              f"expected {COMFY_REL_BUCKETS} / {COMFY_REL_MAX_DISTANCE} (all T5 v1.1 models)")
    return cfg


# ---- prompts ---------------------------------------------------------------------------------------------

# diffusers' PixArt pipelines clean captions with this procedure (from DeepFloyd IF). It is ported rather than
# imported because diffusers is not a ComfyUI dependency; tests check it against diffusers' own method.
_BAD_PUNCT = re.compile(r"[" + "#®•©™&@·º½¾¿¡§~" + r"\)" + r"\(" + r"\]" + r"\[" + r"\}" + r"\{" + r"\|"
                        + "\\" + r"\/" + r"\*" + r"]{1,}")


def clean_caption(caption: str) -> str:
    from bs4 import BeautifulSoup
    import ftfy

    c = ul.unquote_plus(str(caption)).strip().lower()
    c = re.sub("<person>", "person", c)
    c = re.sub(r"\b((?:https?:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))", "", c)
    c = re.sub(r"\b((?:www:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))", "", c)
    c = BeautifulSoup(c, features="html.parser").text
    c = re.sub(r"@[\w\d]+\b", "", c)
    for lo, hi in (("31c0", "31ef"), ("31f0", "31ff"), ("3200", "32ff"), ("3300", "33ff"), ("3400", "4dbf"),
                   ("4dc0", "4dff"), ("4e00", "9fff")):  # CJK blocks
        c = re.sub(f"[\\u{lo}-\\u{hi}]+", "", c)
    c = re.sub(r"[\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B\u2E40\u301C\u3030\u30A0"
               r"\uFE31\uFE32\uFE58\uFE63\uFF0D]+", "-", c)
    c = re.sub(r"[`´«»“”¨]", '"', c)
    c = re.sub(r"[‘’]", "'", c)
    c = re.sub(r"&quot;?", "", c)
    c = re.sub(r"&amp", "", c)
    c = re.sub(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " ", c)
    c = re.sub(r"\d:\d\d\s+$", "", c)
    c = re.sub(r"\\n", " ", c)
    c = re.sub(r"#\d{1,3}\b", "", c)
    c = re.sub(r"#\d{5,}\b", "", c)
    c = re.sub(r"\b\d{6,}\b", "", c)
    c = re.sub(r"[\S]+\.(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)", "", c)
    c = re.sub(r"[\"\']{2,}", r'"', c)
    c = re.sub(r"[\.]{2,}", r" ", c)
    c = re.sub(_BAD_PUNCT, r" ", c)
    c = re.sub(r"\s+\.\s+", r" ", c)
    dash = re.compile(r"(?:\-|\_)")
    if len(re.findall(dash, c)) > 3:
        c = re.sub(dash, " ", c)
    c = ftfy.fix_text(c)
    c = html.unescape(html.unescape(c))
    c = re.sub(r"\b[a-zA-Z]{1,3}\d{3,15}\b", "", c)
    c = re.sub(r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", "", c)
    c = re.sub(r"\b\d+[a-zA-Z]+\d+\b", "", c)
    c = re.sub(r"(worldwide\s+)?(free\s+)?shipping", "", c)
    c = re.sub(r"(free\s)?download(\sfree)?", "", c)
    c = re.sub(r"\bclick\b\s(?:for|on)\s\w+", "", c)
    c = re.sub(r"\b(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)(\simage[s]?)?", "", c)
    c = re.sub(r"\bpage\s+\d+\b", "", c)
    c = re.sub(r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", r" ", c)
    c = re.sub(r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", "", c)
    c = re.sub(r"\b\s+\:\s+", r": ", c)
    c = re.sub(r"(\D[,\./])\b", r"\1 ", c)
    c = re.sub(r"\s+", " ", c)
    c = re.sub(r"^[\"\']([\w\W]+)[\"\']$", r"\1", c)
    c = re.sub(r"^[\'\_,\-\:;]", r"", c)
    c = re.sub(r"[\'\_,\-\:\-\+]$", r"", c)
    c = re.sub(r"^\.\S+$", "", c)
    return c.strip()


def preprocess_prompt(text: str, clean: bool) -> str:
    """What diffusers' PixArt pipelines do to a prompt before tokenizing (`_text_preprocessing`)."""
    if clean:
        return clean_caption(clean_caption(text))
    return text.lower().strip()


def prompt_token_ids(tokenizer, text: str, max_tokens: int, clean: bool) -> list[int]:
    """The tokens diffusers feeds T5 with mask 1: at most max_tokens, the end token included; padding dropped."""
    return list(tokenizer(preprocess_prompt(text, clean), truncation=True, max_length=max_tokens,
                          add_special_tokens=True)["input_ids"])


def max_tokens_for(family: str, max_tokens: int = 0) -> int:
    if max_tokens and max_tokens > 0:
        return int(max_tokens)
    try:
        return FAMILY_TOKENS[family]
    except KeyError:
        raise ValueError(f"family {family!r}: expected one of {', '.join(FAMILY_TOKENS)}") from None


# ---- ComfyUI side ----------------------------------------------------------------------------------------

_TOKENIZER_CLASSES = None


def _tokenizer_classes():
    """ComfyUI tokenizer classes that trim/clean like diffusers (built lazily: importing comfy needs ComfyUI)."""
    global _TOKENIZER_CLASSES
    if _TOKENIZER_CLASSES is None:
        from comfy import sd1_clip
        from comfy.text_encoders.pixart_t5 import T5XXLTokenizer

        class PixArtT5Tokenizer(T5XXLTokenizer):
            def __init__(self, embedding_directory=None, tokenizer_data={}):
                super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)
                self.pixart_max_tokens = int(tokenizer_data.get("pixart_max_tokens", 120))
                self.pixart_clean = bool(tokenizer_data.get("pixart_clean_caption", True))

            def tokenize_with_weights(self, text: str, return_word_ids=False, **kwargs):
                # Prompts are taken literally, as diffusers does (no "(word:1.2)" weights, no embeddings).
                ids = prompt_token_ids(self.tokenizer, text, self.pixart_max_tokens, self.pixart_clean)
                if return_word_ids:
                    return [[(t, 1.0, 0 if t == self.end_token else 1) for t in ids]]
                return [[(t, 1.0) for t in ids]]

        class PixArtT5SD1Tokenizer(sd1_clip.SD1Tokenizer):
            def __init__(self, embedding_directory=None, tokenizer_data={}):
                super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data,
                                 clip_name="t5xxl", tokenizer=PixArtT5Tokenizer)

        _TOKENIZER_CLASSES = (PixArtT5Tokenizer, PixArtT5SD1Tokenizer)
    return _TOKENIZER_CLASSES


def storage_dtype(weight_dtype: str, file_dtype: torch.dtype, load_device) -> torch.dtype:
    """`default`: fp8/fp16/bf16 files stay as stored; fp32 files get ComfyUI's text-encoder dtype."""
    if weight_dtype in WEIGHT_DTYPES:
        return WEIGHT_DTYPES[weight_dtype]
    if weight_dtype != "default":
        raise ValueError(f"weight_dtype {weight_dtype!r}: expected default or one of {', '.join(WEIGHT_DTYPES)}")
    if file_dtype in (torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        return file_dtype
    import comfy.model_management as mm
    return mm.text_encoder_dtype(load_device)


def load_t5_clip(path, family: str = "alpha", max_tokens: int = 0, weight_dtype: str = "default",
                 device: str = "default", clean_caption: bool = True, embedding_directory=None,
                 progress: Callable[[int, int], None] | None = None):
    """A ComfyUI CLIP (comfy.sd.CLIP around ComfyUI's T5) filled shard by shard from `path`."""
    import comfy.model_management as mm
    import comfy.sd
    import comfy.text_encoders.pixart_t5

    src = resolve_t5_source(path)
    where = src.index.parent if src.sharded else src.files[0]
    meta = tensor_meta(src.files)
    cfg = t5_config(meta, src.hf_config, where)
    scaled_fp8 = meta.get("scaled_fp8", (None, None))[1]

    if device == "cpu":
        load_device = offload_device = torch.device("cpu")
    elif device == "default":
        load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
    else:
        raise ValueError(f"device {device!r}: expected default or cpu")
    file_dtype = meta["encoder.final_layer_norm.weight"][1] if "encoder.final_layer_norm.weight" in meta else meta["shared.weight"][1]
    dtype = storage_dtype(weight_dtype, file_dtype, load_device)
    model_options = {"t5xxl_model_config": cfg, "load_device": load_device, "offload_device": offload_device,
                     "initial_device": offload_device}
    if scaled_fp8 is not None:  # ComfyUI's scaled-fp8 files: linear weights stay fp8 with their scales
        if weight_dtype != "default":
            log.info("%s is a scaled fp8 file: its linear weights stay %s, weight_dtype %s applies to the rest",
                     where, scaled_fp8, weight_dtype)
        model_options["t5xxl_scaled_fp8"] = scaled_fp8
    model_options["dtype"] = dtype

    class Target:
        params = {}
        clip = comfy.text_encoders.pixart_t5.pixart_te(dtype_t5=dtype, t5xxl_scaled_fp8=scaled_fp8)
        tokenizer = _tokenizer_classes()[1]

    tokenizer_data = {"pixart_max_tokens": max_tokens_for(family, max_tokens), "pixart_clean_caption": clean_caption}
    clip = comfy.sd.CLIP(Target, embedding_directory=embedding_directory, tokenizer_data=tokenizer_data,
                         model_options=model_options)
    model = clip.cond_stage_model.t5xxl.transformer
    expected = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    filled: set[str] = set()

    def wanted(key):
        return key in expected and key not in filled

    # Plain T5 weights are copied piece by piece straight into the parameters (what load_state_dict does, but
    # without a whole fp32 tensor, ~0.5 GB for T5-XXL's embedding, beside the weights); scaled-fp8 files go
    # through ComfyUI's load_sd whole, as their layers handle the scales themselves.
    direct = scaled_fp8 is None
    for i, f in enumerate(src.files):
        for key, shape, r0, t in iter_pieces(f, wanted, (16 << 20) if direct else None):
            target = expected[key]
            if shape != tuple(target.shape):
                raise CheckpointError(f"{f}: {key} has shape {shape}; expected {tuple(target.shape)} "
                                      f"(from the T5 config {cfg})")
            if direct:
                with torch.no_grad():
                    (target[r0:r0 + t.shape[0]] if target.dim() else target).copy_(t)  # casts to the storage dtype
            else:
                clip.load_sd({key: t})
            del t
            filled.add(key)
            mm.throw_exception_if_processing_interrupted()
        if progress is not None:
            progress(i + 1, len(src.files))
    missing = sorted(k for k in set(expected) - filled
                     if k != "scaled_fp8" and not k.endswith((".scale_weight", ".scale_input")))  # scales default to 1
    if missing:
        raise CheckpointError(f"{where}: the T5 weights lack {len(missing)} tensors the config needs "
                              f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); expected a complete "
                              f"T5 encoder ({cfg['num_layers']} blocks, d_model {cfg['d_model']})")
    return clip
