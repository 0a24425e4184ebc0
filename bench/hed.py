"""HED edge maps at 512 px: our PixArt HED Edge Detector node vs the ControlNet 1.1 reference algorithm, CPU fp32.

Reference (as lllyasviel's annotator and the popular preprocessor pack run it): the network as a plain
NCHW torch module, one image at a time, numpy/OpenCV post-processing (cv2.resize INTER_LINEAR of the five side
outputs, float64 sigmoid of the mean, uint8), measured twice: with the model re-read from ControlNetHED.pth on
every call (what the preprocessor pack does) and with the model cached. Ours: the node on a batch, model cached
and managed by ComfyUI. Random weights in the real 37-key fp16 layout, interleaved, median of N runs, under
torch.inference_mode() like ComfyUI. Reports images per second. Target: ours faster than both.

    python bench/hed.py [--runs 5] [--batch 2] [--px 512]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui  # noqa: E402
from pixart_delta.tiny.hed import write_hed  # noqa: E402
from _timing import interleaved_times  # noqa: E402


class RefBlock(torch.nn.Module):
    def __init__(self, c_in, c_out, n):
        super().__init__()
        self.convs = torch.nn.Sequential(*[torch.nn.Conv2d(c_in if j == 0 else c_out, c_out, 3, padding=1)
                                           for j in range(n)])
        self.projection = torch.nn.Conv2d(c_out, 1, 1)

    def forward(self, x, down):
        if down:
            x = F.max_pool2d(x, 2, 2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class RefHED(torch.nn.Module):
    """ControlNetHED_Apache2 as ControlNet 1.1 defines it."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.Parameter(torch.zeros(1, 3, 1, 1))
        for i, (c_in, c_out, n) in enumerate([(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)], 1):
            setattr(self, f"block{i}", RefBlock(c_in, c_out, n))

    def forward(self, x):
        h, outs = x - self.norm, []
        for i in range(1, 6):
            h, p = getattr(self, f"block{i}")(h, i > 1)
            outs.append(p)
        return outs


def ref_load(path):
    model = RefHED()
    model.load_state_dict({k: v.float() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()})
    return model.eval()


def ref_detect(model, img_uint8):
    import cv2
    H, W = img_uint8.shape[:2]
    x = torch.from_numpy(img_uint8.copy()).float().permute(2, 0, 1)[None]
    edges = [e.numpy().astype(np.float32)[0, 0] for e in model(x)]
    edges = [cv2.resize(e, (W, H), interpolation=cv2.INTER_LINEAR) for e in edges]
    edge = 1 / (1 + np.exp(-np.mean(np.stack(edges, axis=2), axis=2).astype(np.float64)))
    return np.repeat((edge * 255.0).clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--px", type=int, default=512)
    args = ap.parse_args()
    comfy_path = require_comfyui(why="the benchmark runs inside ComfyUI")
    tmp = Path(tempfile.mkdtemp(prefix="bench_hed_"))
    try:
        models = tmp / "models"
        InProcessComfy.get(comfy_path, models_dir=models, output_dir=tmp / "out")
        path = write_hed(models / "hed" / "ControlNetHED.pth")
        from pixart_delta.nodes.hed import PixArtHEDEdgeDetector

        rng = np.random.default_rng(0)
        imgs = [rng.integers(0, 256, (args.px, args.px, 3), dtype=np.uint8) for _ in range(args.batch)]
        batch = torch.from_numpy(np.stack(imgs).astype(np.float32) / 255.0)
        cached = ref_load(path)
        runs = {
            "reference, model reloaded per call": lambda: [ref_detect(ref_load(path), im) for im in imgs],
            "reference, model cached": lambda: [ref_detect(cached, im) for im in imgs],
            "ours (PixArt HED Edge Detector, batch)": lambda: PixArtHEDEdgeDetector.execute(
                batch, "ControlNetHED.pth", False, False, 0).result[0],
        }
        with torch.inference_mode():
            times = interleaved_times(runs, args.runs)
        ips = {k: args.batch / statistics.median(v) for k, v in times.items()}
        ours = ips["ours (PixArt HED Edge Detector, batch)"]
        print(f"\nHED {args.px}x{args.px}, {args.batch} images per run, CPU fp32, {torch.get_num_threads()} threads, "
              f"median of {args.runs}:")
        for name, v in ips.items():
            print(f"  {name:38s} {v:7.3f} images/s   ours is {ours / v:5.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
