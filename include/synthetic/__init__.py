"""Synthetic surgical videos with known boxes, for testing the pipeline end to end without patient data.

Scenes are rendered with numpy + OpenCV (``render``), encoded with FFmpeg and their truth stored by content hash
(``generate``). Run ``python -m include.synthetic --help`` for the command line.
"""

from include.synthetic.generate import (
    TRUTH_SCHEMA,
    GeneratedVideo,
    generate_batch,
    generate_video,
    load_truth,
    sha256_file,
    video_seed,
)
from include.synthetic.render import SCENARIOS, Scene, make_scene, render_frame
from include.synthetic.sprites import CLASSES, Box

__all__ = [
    "CLASSES",
    "SCENARIOS",
    "TRUTH_SCHEMA",
    "Box",
    "GeneratedVideo",
    "Scene",
    "generate_batch",
    "generate_video",
    "load_truth",
    "make_scene",
    "render_frame",
    "sha256_file",
    "video_seed",
]
