"""PixArt LoRA files in every key layout trainers write, applied to our MODEL by core's LoRA loaders: each lands
on exactly the weights it targets (the rows of the fused q/k/v and k/v tensors included) with the delta computed
here from the LoRA tensors, and leaves every other weight as it was; LoRA tensors that match nothing are
reported by name."""
import logging

import pytest
import safetensors.torch
import torch

from pixart_delta.tiny import pixart as fx

pytestmark = pytest.mark.comfyui

H = fx.TINY["hidden"]
STRENGTH = 0.7


@pytest.fixture(scope="module")
def unet_dir(models_dir):
    d = models_dir / "diffusion_models" / "test_pixart_lora"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def lora_dir(models_dir):
    d = models_dir / "loras" / "test_pixart_lora"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def tiny_model(comfy, unet_dir):
    """Tiny PixArt-α 1024 (micro-conditioning, so the size embedders are there to target too)."""
    from pixart_delta.loaders.pixart_comfy import load_pixart_model
    sd = fx.random_original(seed=3, **fx.TINY, micro=True, native_px=1024)
    return load_pixart_model(fx.write_original(unet_dir / "PixArt-XL-2-1024-MS.pth", sd), "auto", "fp32")


# ---- LoRA tensors and the deltas they mean (LyCORIS / kohya definitions) ------------------------------------

class LoRA:
    """A LoRA file being written: its tensors, and the delta each one means for a weight of the network."""

    def __init__(self, seed):
        self.tensors, self.deltas = {}, []     # deltas: (parameter, rows or None, delta before strength)
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.g) * 0.1

    def lora(self, name, target, rows, out_f, in_f, rank=4, alpha=2.0, down="lora_down.weight",
             up="lora_up.weight", kernel=None):
        """LoRA / LoCon: up @ down * alpha / rank (a conv's down holds the kernel, its up is 1x1)."""
        d = self.randn(rank, in_f, *kernel) if kernel else self.randn(rank, in_f)
        u = self.randn(out_f, rank, 1, 1) if kernel else self.randn(out_f, rank)
        self.tensors.update({f"{name}.{down}": d, f"{name}.{up}": u})
        if alpha is not None:
            self.tensors[f"{name}.alpha"] = torch.tensor(alpha)
        scale = alpha / rank if alpha is not None else 1.0
        delta = u.flatten(1) @ d.flatten(1)
        self.deltas.append((target, rows, delta.reshape(out_f, in_f, *kernel) * scale if kernel else delta * scale))

    def loha(self, name, target, rows, out_f, in_f, rank=4, alpha=3.0):
        """LoHa: (w1a @ w1b) * (w2a @ w2b) * alpha / rank."""
        w = {k: self.randn(out_f, rank) if k.endswith("_a") else self.randn(rank, in_f)
             for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")}
        self.tensors.update({f"{name}.{k}": v for k, v in w.items()})
        self.tensors[f"{name}.alpha"] = torch.tensor(alpha)
        delta = (w["hada_w1_a"] @ w["hada_w1_b"]) * (w["hada_w2_a"] @ w["hada_w2_b"]) * (alpha / rank)
        self.deltas.append((target, rows, delta))

    def lokr(self, name, target, rows, out_f, in_f, factor=4, rank=None, alpha=3.0):
        """LoKr: kron(w1, w2) * scale; w2 = w2_a @ w2_b (scale alpha / rank) when `rank`, else full (scale 1)."""
        w1 = self.randn(factor, factor)
        self.tensors[f"{name}.lokr_w1"] = w1
        if rank is None:
            w2 = self.randn(out_f // factor, in_f // factor)
            self.tensors[f"{name}.lokr_w2"] = w2
            scale = 1.0
        else:
            w2a, w2b = self.randn(out_f // factor, rank), self.randn(rank, in_f // factor)
            self.tensors.update({f"{name}.lokr_w2_a": w2a, f"{name}.lokr_w2_b": w2b})
            w2, scale = w2a @ w2b, alpha / rank
        self.tensors[f"{name}.alpha"] = torch.tensor(alpha)
        self.deltas.append((target, rows, torch.kron(w1, w2) * scale))


def rows(block, h=H):
    """Row block `block` of a fused tensor: q, k, v of attn.qkv; k, v of cross_attn.kv_linear."""
    return slice(block * h, (block + 1) * h)


def lora_peft():
    """PEFT/diffusers (core's own map): the three prefixes diffusers' and PEFT's scripts write."""
    f = LoRA(10)
    f.lora("transformer.transformer_blocks.0.attn1.to_q", "blocks.0.attn.qkv.weight", rows(0), H, H,
           alpha=None, down="lora_A.weight", up="lora_B.weight")
    f.lora("base_model.model.transformer_blocks.1.attn2.to_v", "blocks.1.cross_attn.kv_linear.weight", rows(1), H, H,
           alpha=None, down="lora_A.weight", up="lora_B.weight")
    f.lora("unet.base_model.model.transformer_blocks.1.ff.net.2", "blocks.1.mlp.fc2.weight", None, H, 4 * H,
           alpha=None, down="lora_A.weight", up="lora_B.weight")
    return f


def lora_onetrainer_legacy():
    """OneTrainer's default save (convert_to_legacy_diffusers, prefix lora_transformer), every kind of module."""
    f = LoRA(11)
    p = "lora_transformer_"
    f.lora(p + "transformer_blocks_1_attn1_to_k", "blocks.1.attn.qkv.weight", rows(1), H, H)
    f.lora(p + "transformer_blocks_1_attn1_to_v", "blocks.1.attn.qkv.weight", rows(2), H, H, rank=2, alpha=1.0)
    f.lora(p + "transformer_blocks_0_attn1_to_out_0", "blocks.0.attn.proj.weight", None, H, H)
    f.lora(p + "transformer_blocks_0_attn2_to_q", "blocks.0.cross_attn.q_linear.weight", None, H, H)
    f.lora(p + "transformer_blocks_0_attn2_to_k", "blocks.0.cross_attn.kv_linear.weight", rows(0), H, H)
    f.lora(p + "transformer_blocks_0_attn2_to_out_0", "blocks.0.cross_attn.proj.weight", None, H, H)
    f.lora(p + "transformer_blocks_1_ff_net_0_proj", "blocks.1.mlp.fc1.weight", None, 4 * H, H)
    f.lora(p + "adaln_single_linear", "t_block.1.weight", None, 6 * H, H)
    f.lora(p + "adaln_single_emb_resolution_embedder_linear_1", "csize_embedder.mlp.0.weight", None, H // 3, 256)
    f.lora(p + "caption_projection_linear_1", "y_embedder.y_proj.fc1.weight", None, H, fx.TINY["caption_channels"])
    f.lora(p + "proj_out", "final_layer.linear.weight", None, 32, H)
    return f


def lora_kohya():
    """lora_unet_ + the diffusers module names (kohya-style trainers on the diffusers transformer), and + the
    original module names (core's own map)."""
    f = LoRA(12)
    f.lora("lora_unet_transformer_blocks_0_attn1_to_q", "blocks.0.attn.qkv.weight", rows(0), H, H)
    f.lora("lora_unet_transformer_blocks_1_attn2_to_v", "blocks.1.cross_attn.kv_linear.weight", rows(1), H, H)
    f.lora("lora_unet_adaln_single_emb_timestep_embedder_linear_2", "t_embedder.mlp.2.weight", None, H, H)
    f.lora("lora_unet_blocks_1_mlp_fc1", "blocks.1.mlp.fc1.weight", None, 4 * H, H)
    return f


def lora_onetrainer_omi():
    """OneTrainer's omi save: `transformer.` + the original module names, fused rows as .0/.1/.2."""
    f = LoRA(13)
    f.lora("transformer.blocks.0.attn.qkv.2", "blocks.0.attn.qkv.weight", rows(2), H, H)
    f.lora("transformer.blocks.1.attn.qkv.0", "blocks.1.attn.qkv.weight", rows(0), H, H)
    f.lora("transformer.blocks.1.cross_attn.kv_linear.1", "blocks.1.cross_attn.kv_linear.weight", rows(1), H, H)
    f.lora("transformer.blocks.0.mlp.fc2", "blocks.0.mlp.fc2.weight", None, H, 4 * H)
    f.lora("transformer.ar_embedder.mlp.2", "ar_embedder.mlp.2.weight", None, H // 3, H // 3)
    f.lora("transformer.t_block.1", "t_block.1.weight", None, 6 * H, H)
    return f


def lora_locon_conv():
    """LoCon on the patch-embedding conv (kernel 2x2), OneTrainer legacy and SimpleTuner LyCORIS names."""
    f = LoRA(14)
    f.lora("lora_transformer_pos_embed_proj", "x_embedder.proj.weight", None, H, 4, kernel=(2, 2))
    f.lora("lycoris_transformer_blocks_1_attn1_to_out_0", "blocks.1.attn.proj.weight", None, H, H)
    return f


def lora_loha():
    """LyCORIS LoHa, SimpleTuner (lycoris_) and OneTrainer (lora_transformer_) names, on fused rows too."""
    f = LoRA(15)
    f.loha("lycoris_transformer_blocks_0_attn1_to_v", "blocks.0.attn.qkv.weight", rows(2), H, H)
    f.loha("lycoris_transformer_blocks_1_attn2_to_k", "blocks.1.cross_attn.kv_linear.weight", rows(0), H, H)
    f.loha("lora_transformer_transformer_blocks_1_ff_net_2", "blocks.1.mlp.fc2.weight", None, H, 4 * H, rank=2)
    return f


def lora_lokr():
    """LyCORIS LoKr: w1 full with w2 factorised (alpha / rank) and w1, w2 both full (scale 1)."""
    f = LoRA(16)
    f.lokr("lycoris_transformer_blocks_1_attn1_to_q", "blocks.1.attn.qkv.weight", rows(0), H, H, rank=3)
    f.lokr("lora_transformer_transformer_blocks_0_attn2_to_v", "blocks.0.cross_attn.kv_linear.weight", rows(1), H, H)
    f.lokr("lycoris_transformer_blocks_0_ff_net_0_proj", "blocks.0.mlp.fc1.weight", None, 4 * H, H, factor=8, rank=2)
    return f


def patched_state_dict(patcher) -> dict:
    patcher.patch_model()
    try:
        return {k: v.detach().clone() for k, v in patcher.model.diffusion_model.state_dict().items()}
    finally:
        patcher.unpatch_model()


def expected_state_dict(before: dict, deltas, strength) -> dict:
    expected = {k: v.clone() for k, v in before.items()}
    for target, rows, delta in deltas:
        if rows is None:
            expected[target] += strength * delta
        else:
            expected[target][rows] += strength * delta
    return expected


def assert_only_targets_changed(after: dict, expected: dict, targets: set):
    assert after.keys() == expected.keys()
    for k in after:
        if k in targets:
            assert torch.allclose(after[k], expected[k], rtol=1e-5, atol=1e-6), k
        else:
            assert torch.equal(after[k], expected[k]), f"{k} changed and no LoRA module targets it"


def apply_with_core_loader(patcher, lora_dir, name, tensors, strength=STRENGTH):
    import nodes
    safetensors.torch.save_file(tensors, str(lora_dir / name))
    (lored,) = nodes.LoraLoaderModelOnly().load_lora_model_only(patcher, f"test_pixart_lora/{name}", strength)
    return lored


FORMS = {
    "peft_diffusers": lora_peft,
    "onetrainer_legacy": lora_onetrainer_legacy,
    "kohya_lora_unet": lora_kohya,
    "onetrainer_omi": lora_onetrainer_omi,
    "locon_conv": lora_locon_conv,
    "lycoris_loha": lora_loha,
    "lycoris_lokr": lora_lokr,
}


@torch.inference_mode()
@pytest.mark.parametrize("form", FORMS)
def test_lora_form_lands_on_exactly_its_weights(tiny_model, lora_dir, form, caplog):
    lora = FORMS[form]()
    before = patched_state_dict(tiny_model)
    with caplog.at_level(logging.WARNING):
        lored = apply_with_core_loader(tiny_model, lora_dir, f"{form}.safetensors", lora.tensors)
    assert not [r.getMessage() for r in caplog.records if "lora key not loaded" in r.getMessage()
                or "NOT LOADED" in r.getMessage() or "PixArt MODEL" in r.getMessage()]
    expected = expected_state_dict(before, lora.deltas, STRENGTH)
    assert_only_targets_changed(patched_state_dict(lored), expected, {t for t, _, _ in lora.deltas})
    assert all(torch.equal(v, before[k]) for k, v in patched_state_dict(tiny_model).items())  # the input MODEL


@torch.inference_mode()
def test_lora_loader_with_clip_input_applies_the_same(tiny_model, lora_dir):
    import nodes
    lora = lora_onetrainer_omi()
    safetensors.torch.save_file(lora.tensors, str(lora_dir / "omi_for_lora_loader.safetensors"))
    before = patched_state_dict(tiny_model)
    lored, clip = nodes.LoraLoader().load_lora(tiny_model, None, "test_pixart_lora/omi_for_lora_loader.safetensors",
                                               -1.5, 1.0)
    assert clip is None
    expected = expected_state_dict(before, lora.deltas, -1.5)
    assert_only_targets_changed(patched_state_dict(lored), expected, {t for t, _, _ in lora.deltas})


@torch.inference_mode()
def test_full_size_block_fused_rows(comfy, unet_dir, lora_dir):
    """hidden 1152 (the published width), one block: q/k/v and k/v row blocks of 1152 rows each."""
    from pixart_delta.loaders.pixart_comfy import load_pixart_model
    h = fx.FULL["hidden"]
    sd = fx.random_original(seed=4, hidden=h, depth=1, caption_channels=64, micro=False, native_px=512)
    patcher = load_pixart_model(fx.write_original(unet_dir / "PixArt-XL-2-512x512.pth", sd), "auto", "fp32")
    f = LoRA(17)
    f.lora("lora_transformer_transformer_blocks_0_attn1_to_v", "blocks.0.attn.qkv.weight", rows(2, h), h, h, rank=8)
    f.lora("transformer.blocks.0.cross_attn.kv_linear.1", "blocks.0.cross_attn.kv_linear.weight", rows(1, h), h, h)
    f.loha("lycoris_transformer_blocks_0_attn1_to_k", "blocks.0.attn.qkv.weight", rows(1, h), h, h)
    before = patched_state_dict(patcher)
    lored = apply_with_core_loader(patcher, lora_dir, "full_size.safetensors", f.tensors, strength=1.0)
    after = patched_state_dict(lored)
    assert torch.equal(after["blocks.0.attn.qkv.weight"][rows(0, h)], before["blocks.0.attn.qkv.weight"][rows(0, h)])
    assert torch.equal(after["blocks.0.cross_attn.kv_linear.weight"][rows(0, h)],
                       before["blocks.0.cross_attn.kv_linear.weight"][rows(0, h)])
    assert_only_targets_changed(after, expected_state_dict(before, f.deltas, 1.0), {t for t, _, _ in f.deltas})


def sdxl_lora_tensors():
    g = torch.Generator().manual_seed(0)
    return {"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.randn(4, 640, generator=g),
            "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": torch.randn(640, 4, generator=g),
            "lora_unet_input_blocks_4_1_proj_in.alpha": torch.tensor(4.0),
            "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.randn(4, 768, generator=g)}


@torch.inference_mode()
def test_lora_matching_nothing_is_reported_by_name(tiny_model, lora_dir, caplog):
    tensors = sdxl_lora_tensors()
    before = patched_state_dict(tiny_model)
    with caplog.at_level(logging.WARNING):
        lored = apply_with_core_loader(tiny_model, lora_dir, "sdxl_style.safetensors", tensors)
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PixArt MODEL")]
    assert len(reports) == 1
    assert "4 of 4 LoRA tensors match no weight" in reports[0] and "none of this LoRA applies" in reports[0]
    assert all(name in reports[0] for name in tensors)
    assert all(torch.equal(v, before[k]) for k, v in patched_state_dict(lored).items())


@torch.inference_mode()
def test_partly_matching_lora_names_only_the_unmatched_tensors(tiny_model, lora_dir, caplog):
    lora = lora_kohya()
    stray = {"lora_transformer_transformer_blocks_9_attn1_to_q.lora_down.weight": torch.zeros(4, H),  # no block 9
             "bundle_emb.my_token.t5": torch.zeros(2, 64)}
    with caplog.at_level(logging.WARNING):
        apply_with_core_loader(tiny_model, lora_dir, "partly.safetensors", {**lora.tensors, **stray})
    (report,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PixArt MODEL")]
    total = len(lora.tensors) + len(stray)
    assert f"2 of {total} LoRA tensors match no weight, these parts of the LoRA are not applied" in report
    assert all(name in report for name in stray)
    assert not any(name in report for name in lora.tensors)


def test_unmatched_lora_is_shown_on_the_lora_node(comfy, unet_dir, lora_dir, monkeypatch):
    """Through the executor: the report is the LoRA node's progress text (what the UI shows under the node)."""
    import server
    shown = []

    class Server:
        def send_progress_text(self, text, node_id, sid=None):
            shown.append((node_id, text))

    monkeypatch.setattr(server.PromptServer, "instance", Server(), raising=False)
    fx.write_original(unet_dir / "ui.pth", fx.random_original(**fx.TINY, micro=False, native_px=512))
    safetensors.torch.save_file(sdxl_lora_tensors(), str(lora_dir / "sdxl_for_ui.safetensors"))
    comfy.run({
        "1": {"class_type": "PixArtCheckpointLoader",
              "inputs": {"ckpt_name": "test_pixart_lora/ui.pth", "variant": "auto", "weight_dtype": "default"}},
        "2": {"class_type": "LoraLoaderModelOnly",
              "inputs": {"model": ["1", 0], "lora_name": "test_pixart_lora/sdxl_for_ui.safetensors",
                         "strength_model": 1.0}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}})
    assert [node for node, _ in shown] == ["2"]
    assert "none of this LoRA applies" in shown[0][1] and "lora_unet_input_blocks_4_1_proj_in.alpha" in shown[0][1]


def test_hook_adds_keys_for_our_model_only(tiny_model):
    """Core's entries stay as core makes them; any other model (here a plain one) gets exactly core's map."""
    import comfy.lora
    core_map = comfy.lora.model_lora_keys_unet.__wrapped__
    ours, cores = comfy.lora.model_lora_keys_unet(tiny_model.model, {}), core_map(tiny_model.model, {})
    assert all(ours[k] == v for k, v in cores.items())
    assert "lora_transformer_transformer_blocks_0_attn1_to_q" in ours.keys() - cores.keys()

    class OtherModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = torch.nn.Linear(3, 3)
            self.model_config = type("Config", (), {"unet_config": {}})()
    other = OtherModel()
    assert comfy.lora.model_lora_keys_unet(other, {}) == core_map(other, {})
