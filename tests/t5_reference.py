"""The T5 reference the T5 loader tests compare with: transformers' T5EncoderModel with given weights, and the
embeddings diffusers' PixArt pipelines hand the transformer (encode_prompt, at the positions its mask keeps)."""
from __future__ import annotations

import torch

from pixart_delta.tiny.t5 import TINY, hf_config, random_t5_state_dict

PROMPTS = ["A photo of a Cat sitting on a <b>red</b> mat, http://example.com",
           "an astronaut riding a horse, (masterpiece:1.2), 4k",
           ""]
LONG = ", ".join(f"word{i} cat dog" for i in range(200))  # far over 300 tokens


def reference_encoder(weights=None, cfg: dict = TINY):
    """transformers' T5EncoderModel with the fixture weights of `cfg` (or `weights`, e.g. rounded to fp8)."""
    import transformers
    config = {k: v for k, v in hf_config(**cfg).items() if k not in ("architectures", "torch_dtype")}
    model = transformers.T5EncoderModel(transformers.T5Config(**config)).eval()
    sd = random_t5_state_dict(cfg) if weights is None else weights
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert set(missing) <= {"encoder.embed_tokens.weight"} and not unexpected
    return model


def diffusers_embeds(model, tokenizer, prompt, family="alpha", clean=True):
    """What diffusers' pipeline hands the transformer: embeddings at the positions its mask keeps."""
    import diffusers
    pipe_cls = diffusers.PixArtAlphaPipeline if family == "alpha" else diffusers.PixArtSigmaPipeline
    pipe = pipe_cls(tokenizer=tokenizer, text_encoder=model, vae=None, transformer=None, scheduler=None)
    length = 120 if family == "alpha" else 300
    with torch.no_grad():
        emb, mask, neg, neg_mask = pipe.encode_prompt(prompt, negative_prompt="", clean_caption=clean,
                                                      max_sequence_length=length, device=torch.device("cpu"))
    return emb[0][mask[0].bool()], neg[0][neg_mask[0].bool()]


def encode(clip, text):
    return clip.encode_from_tokens(clip.tokenize(text))


def load(path, **kw):
    """Our T5 CLIP from `path`, on the CPU."""
    from pixart_delta.loaders.t5_comfy import load_t5_clip
    return load_t5_clip(path, device="cpu", **kw)
