"""PixArt Canny (ControlNet 1.0): IMAGE batch -> cv2.Canny edge maps as ControlNet 1.0/1.1 made its training and
demo hints (HWC3, resize_image, thresholds 100/200)."""
from __future__ import annotations

import comfy.utils
from comfy_api.latest import io

from ..preprocessors.canny import HIGH, LOW, canny


class PixArtCanny(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtCanny",
            display_name="PixArt Canny (ControlNet 1.0)",
            category="PixArt/preprocessors",
            description="Canny edges exactly as lllyasviel's ControlNet 1.0/1.1 computes them: OpenCV's cv2.Canny on "
                        "the 8-bit RGB image (3x3 Sobel, L1 gradient, no blur), thresholds 100/200 by default; white "
                        "edges on black, 3 channels, the input size. For ControlNet 1.0/1.1 canny models. "
                        "ControlNet++'s canny model was trained on kornia's Canny instead: use core's Canny node at "
                        "low 0.1, high 0.2 for it.",
            inputs=[
                io.Image.Input("image", tooltip="Image batch (8-bit levels are used, as ControlNet reads a picture). "
                                                "Gray images are replicated to RGB; an alpha channel is composited "
                                                "on white (ControlNet's HWC3)."),
                io.Int.Input("low_threshold", default=LOW, min=0, max=2000,
                             tooltip="cv2.Canny's lower hysteresis threshold on the L1 Sobel gradient of the 0..255 "
                                     "image; ControlNet's default 100."),
                io.Int.Input("high_threshold", default=HIGH, min=0, max=2000,
                             tooltip="cv2.Canny's upper threshold (strong edges); ControlNet's default 200."),
                io.Int.Input("resolution", default=512, min=0, max=4096,
                             tooltip="Detection size: the short side is scaled to this and both sides rounded to "
                                     "multiples of 64 (ControlNet's resize_image, Lanczos up / area down); the map is "
                                     "then resized back to the input size (bilinear, as ControlNet 1.1 does). A "
                                     "512 px picture is used as it is. 0 = detect at the input size."),
            ],
            outputs=[io.Image.Output(display_name="edges")],
        )

    @classmethod
    def execute(cls, image, low_threshold=LOW, high_threshold=HIGH, resolution=512) -> io.NodeOutput:
        pbar = comfy.utils.ProgressBar(image.shape[0])
        return io.NodeOutput(canny(image, low_threshold, high_threshold, resolution, progress=pbar.update))


NODES = [PixArtCanny]
