"""Control preprocessors at 512 px: each of our nodes vs the reference computation, CPU fp32, images per second.

Contenders per node (random weights in the real layouts at full size, interleaved rounds, median of N runs, under
torch.inference_mode() like ComfyUI):
- canny: cv2 directly (ControlNet's resize_image + cv2.Canny per image) vs PixArt Canny on the batch;
- lineart: lllyasviel's annotator (the Generator as a plain torch module, one image at a time, OpenCV resizes,
  numpy post-processing) with the model re-read from sk_model.pth on every call (what the popular preprocessor
  pack does) and cached, vs PixArt Lineart on the batch;
- hed: bench/hed.py's reference, reloaded and cached, vs PixArt HED Edge Detector;
- depth / seg: ControlNet++'s inference code restated (tests/test_depth_segmentation.py: resize_image, the
  transformers 4.38.1 processor and post-processing, one image at a time) around transformers'
  DPTForDepthEstimation (Intel/dpt-large shape) / UperNetForSemanticSegmentation (openmmlab/upernet-convnext-small
  shape), from_pretrained on every call and cached, vs PixArt Depth (DPT) / PixArt Segmentation (ADE20K).
The full-size DPT-large folder is 1.4 GB (three copies are alive at once); --only picks nodes.

    python bench/preprocessors.py [--runs 3] [--batch 2] [--px 512] [--only canny,lineart,hed,depth,seg]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui  # noqa: E402
from _timing import interleaved_times  # noqa: E402

NODES = ("canny", "lineart", "hed", "depth", "seg")


# ---- lineart reference: lllyasviel/ControlNet-v1-1-nightly annotator/lineart, restated --------------------------

class RefResidualBlock(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        nn = torch.nn
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c), nn.ReLU(),
                                        nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c))

    def forward(self, x):
        return x + self.conv_block(x)


class RefGenerator(torch.nn.Module):
    """Generator(3, 1, 3)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 64, 7), nn.InstanceNorm2d(64), nn.ReLU())
        self.model1 = nn.Sequential(nn.Conv2d(64, 128, 3, 2, 1), nn.InstanceNorm2d(128), nn.ReLU(),
                                    nn.Conv2d(128, 256, 3, 2, 1), nn.InstanceNorm2d(256), nn.ReLU())
        self.model2 = nn.Sequential(*[RefResidualBlock(256) for _ in range(3)])
        self.model3 = nn.Sequential(nn.ConvTranspose2d(256, 128, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(128),
                                    nn.ReLU(), nn.ConvTranspose2d(128, 64, 3, 2, 1, output_padding=1),
                                    nn.InstanceNorm2d(64), nn.ReLU())
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

    def forward(self, x):
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


def ref_lineart_load(path):
    model = RefGenerator()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def ref_resize_image(img, resolution):
    import cv2
    H, W = float(img.shape[0]), float(img.shape[1])
    k = float(resolution) / min(H, W)
    H, W = int(np.round(H * k / 64.0)) * 64, int(np.round(W * k / 64.0)) * 64
    return cv2.resize(img, (W, H), interpolation=cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)


def ref_lineart(model, img, detect_resolution=512):
    import cv2
    H, W = img.shape[:2]
    small = ref_resize_image(img, detect_resolution)
    x = torch.from_numpy(small).float().permute(2, 0, 1)[None] / 255.0
    line = (model(x)[0][0].numpy() * 255.0).clip(0, 255).astype(np.uint8)
    detected = cv2.resize(np.repeat(line[..., None], 3, axis=2), (W, H), interpolation=cv2.INTER_LINEAR)
    return 255 - detected


# ---- full-size transformers folders -------------------------------------------------------------------------

def write_full_dpt_large(path: Path) -> Path:
    """Intel/dpt-large's shape (ViT-L/16 at 384: 1024 wide, 24 layers, taps 5/11/17/23, neck 256/512/1024/1024)."""
    from transformers import DPTConfig, DPTForDepthEstimation
    from pixart_delta.tiny.depth import DPT_PREPROCESSOR, spread_init
    config = DPTConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       image_size=384, patch_size=16, backbone_out_indices=[5, 11, 17, 23], readout_type="project",
                       reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[256, 512, 1024, 1024],
                       fusion_hidden_size=256, head_in_index=-1)
    torch.manual_seed(0)
    model = DPTForDepthEstimation(config).eval()
    g = torch.Generator().manual_seed(0)
    spread_init(model.neck, g)
    spread_init(model.head, g)
    model.save_pretrained(path, safe_serialization=True)
    (path / "preprocessor_config.json").write_text(json.dumps(DPT_PREPROCESSOR, indent=2))
    return path


def write_full_upernet(path: Path) -> Path:
    """openmmlab/upernet-convnext-small's shape (ConvNeXt depths 3/3/27/3, widths 96..768, UperNet 512 wide)."""
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation
    from pixart_delta.tiny.depth import spread_init
    from pixart_delta.tiny.segmentation import SEGFORMER_PREPROCESSOR
    backbone = ConvNextConfig(depths=[3, 3, 27, 3], hidden_sizes=[96, 192, 384, 768],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    config = UperNetConfig(backbone_config=backbone, hidden_size=512, pool_scales=[1, 2, 3, 6],
                           use_auxiliary_head=True, auxiliary_in_channels=384, auxiliary_channels=256, num_labels=150)
    torch.manual_seed(0)
    model = UperNetForSemanticSegmentation(config).eval()
    spread_init(model, torch.Generator().manual_seed(0))
    model.save_pretrained(path, safe_serialization=True)
    (path / "preprocessor_config.json").write_text(json.dumps(SEGFORMER_PREPROCESSOR, indent=2))
    return path


# ---- contenders ---------------------------------------------------------------------------------------------

def contenders(node: str, models: Path, imgs: list[np.ndarray], batch: torch.Tensor) -> dict:
    px = max(imgs[0].shape[:2])
    if node == "canny":
        import cv2
        from pixart_delta.nodes.canny import PixArtCanny

        def cv2_canny(im):   # ControlNet 1.1's steps: resize_image(512), cv2.Canny, INTER_LINEAR back
            edges = cv2.Canny(ref_resize_image(im, 512), 100, 200)
            return cv2.resize(edges, im.shape[1::-1], interpolation=cv2.INTER_LINEAR) if edges.shape != im.shape[:2] \
                else edges
        return {"cv2 directly (resize_image + cv2.Canny)": lambda: [cv2_canny(im) for im in imgs],
                "ours (PixArt Canny, batch)": lambda: PixArtCanny.execute(batch, 100, 200, 512).result[0]}
    if node == "lineart":
        from pixart_delta.nodes.lineart import PixArtLineart
        from pixart_delta.tiny.lineart import write_lineart
        path = write_lineart(models / "lineart" / "sk_model.pth")
        cached = ref_lineart_load(path)
        return {"reference, model reloaded per call": lambda: [ref_lineart(ref_lineart_load(path), im) for im in imgs],
                "reference, model cached": lambda: [ref_lineart(cached, im) for im in imgs],
                "ours (PixArt Lineart, batch)": lambda: PixArtLineart.execute(batch, "sk_model.pth", 512).result[0]}
    if node == "hed":
        from hed import ref_detect, ref_load
        from pixart_delta.nodes.hed import PixArtHEDEdgeDetector
        from pixart_delta.tiny.hed import write_hed
        path = write_hed(models / "hed" / "ControlNetHED.pth")
        cached = ref_load(path)
        return {"reference, model reloaded per call": lambda: [ref_detect(ref_load(path), im) for im in imgs],
                "reference, model cached": lambda: [ref_detect(cached, im) for im in imgs],
                "ours (PixArt HED Edge Detector, batch)": lambda: PixArtHEDEdgeDetector.execute(
                    batch, "ControlNetHED.pth", False, False, 0).result[0]}
    sys.path.insert(0, str(ROOT / "tests"))
    from test_depth_segmentation import ref_depth, ref_segment   # ControlNet++'s inference code, restated
    if node == "depth":
        from transformers import DPTForDepthEstimation
        from pixart_delta.nodes.depth import PixArtDepthDPT
        from pixart_delta.tiny.depth import DPT_PREPROCESSOR
        folder = write_full_dpt_large(models / "depth" / "dpt-large")
        cached = DPTForDepthEstimation.from_pretrained(folder).eval()
        return {"reference, model reloaded per call": lambda: [ref_depth(
                    DPTForDepthEstimation.from_pretrained(folder).eval(), DPT_PREPROCESSOR, im, 384, px) for im in imgs],
                "reference, model cached": lambda: [ref_depth(cached, DPT_PREPROCESSOR, im, 384, px) for im in imgs],
                "ours (PixArt Depth (DPT), batch)": lambda: PixArtDepthDPT.execute(batch, "dpt-large", 384).result[0]}
    from transformers import UperNetForSemanticSegmentation
    from pixart_delta.nodes.segmentation import PixArtSegmentationADE20K
    from pixart_delta.tiny.segmentation import SEGFORMER_PREPROCESSOR
    folder = write_full_upernet(models / "segmentation" / "upernet-convnext-small")
    cached = UperNetForSemanticSegmentation.from_pretrained(folder).eval()
    return {"reference, model reloaded per call": lambda: [ref_segment(
                UperNetForSemanticSegmentation.from_pretrained(folder).eval(), SEGFORMER_PREPROCESSOR, im, 512, px)
                for im in imgs],
            "reference, model cached": lambda: [ref_segment(cached, SEGFORMER_PREPROCESSOR, im, 512, px) for im in imgs],
            "ours (PixArt Segmentation (ADE20K), batch)": lambda: PixArtSegmentationADE20K.execute(
                batch, "upernet-convnext-small", 512).result[0]}


def picture(px: int, seed: int) -> np.ndarray:
    """Smooth colour fields, shapes and texture (Canny and the networks see edges, not noise)."""
    import cv2
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.normal(0, 1, (px // 24, px // 24, 3)).astype(np.float32), (px, px),
                     interpolation=cv2.INTER_CUBIC) * 45 + 128
    yy, xx = np.mgrid[0:px, 0:px]
    for _ in range(5):
        cy, cx, r = rng.uniform(0, px, 2).tolist() + [rng.uniform(0.05, 0.25) * px]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return (img + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--px", type=int, default=512)
    ap.add_argument("--only", default=",".join(NODES), help="comma-separated subset of " + ", ".join(NODES))
    args = ap.parse_args()
    comfy_path = require_comfyui(why="the benchmark runs inside ComfyUI")
    tmp = Path(tempfile.mkdtemp(prefix="bench_preprocessors_"))
    rows = []
    try:
        models = tmp / "models"
        InProcessComfy.get(comfy_path, models_dir=models, output_dir=tmp / "out")
        imgs = [picture(args.px, s) for s in range(args.batch)]
        batch = torch.from_numpy(np.stack(imgs).astype(np.float32) / 255.0)
        for node in [n for n in args.only.split(",") if n]:
            if node not in NODES:
                raise SystemExit(f"unknown node {node!r}; pick from {', '.join(NODES)}")
            print(f"\n{node}:", flush=True)
            runs = contenders(node, models, imgs, batch)
            with torch.inference_mode():
                times = interleaved_times(runs, args.runs)
            ips = {k: args.batch / statistics.median(v) for k, v in times.items()}
            ours = next(v for k, v in ips.items() if k.startswith("ours"))
            rows += [(node, k, v, ours / v) for k, v in ips.items()]
            del runs
        print(f"\n{args.px}x{args.px}, {args.batch} images per run, CPU fp32, {torch.get_num_threads()} threads, "
              f"median of {args.runs}:")
        print(f"  {'node':8s} {'contender':44s} {'images/s':>9s}  ours is")
        for node, name, v, ratio in rows:
            print(f"  {node:8s} {name:44s} {v:9.3f}  {ratio:6.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
