"""Every default of the method, in one place.

Numbers come from the papers (see ``../shared/docs/PAPER_FACTS.md``; seed 002 is Afformer + MaskAHand).
Each stage command loads its recipe (the ``*Recipe`` dataclasses at the bottom) with
:func:`maskahand.core.configbase.load_config`, so ``maskahand mine ... mine.fps=5 detector.batch_size=8``
overrides a field by its dotted path, and the resolved recipe is written next to the outputs.

Field comments say where a default comes from when it is the paper's.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

from .configbase import CHOICES, RUNTIME, SECRET
from .plugins import DETECTOR_BACKENDS

# --------------------------------------------------------------------------------------------------
# Inputs and infrastructure


@dataclass
class VideoConfig:
    backend: Literal["pyav", "decord"] = "pyav"  # decord is guarded: it falls back to PyAV on failure
    fps: float = 5.0  # paper: frames sampled at 5 fps
    max_side: Optional[int] = None  # resize so that max(h, w) <= max_side (None: keep source size)
    folder_fps: float = 60.0  # frame rate of EPIC-style frame folders (EPIC-KITCHENS-55: 60 fps)
    threads: int = field(default=0, metadata=RUNTIME)  # decoder threads (0: library default)

    def validate(self) -> None:
        if self.fps <= 0:
            raise ValueError("fps must be > 0")
        if self.folder_fps <= 0:
            raise ValueError("folder_fps must be > 0")
        if self.max_side is not None and self.max_side < 16:
            raise ValueError("max_side must be >= 16 or null")


@dataclass
class ShardWriterConfig:
    max_samples: int = 200  # a shard is closed after this many samples ...
    max_bytes: int = 512 * 1024 * 1024  # ... or before it would grow past this many bytes
    jpeg_quality: int = 90  # frames: one JPEG member each (measured: benchmarks.shards)
    # maskahand targets: png keeps them exactly as rendered (noise included); jpeg (q jpeg_quality) is
    # ~4x smaller but shifts the noise regions by tens of grey levels (benchmarks.shards)
    target_format: Literal["png", "jpeg"] = "png"

    def validate(self) -> None:
        if self.max_samples < 1 or self.max_bytes < 1:
            raise ValueError("max_samples and max_bytes must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")


@dataclass
class StorageConfig:
    # fsspec options for URL inputs and outputs (s3://, gs://, http(s)://), flat or per protocol:
    # storage.options={s3: {endpoint_url: "http://host:9000"}}. The standard variables (AWS_*,
    # AWS_ENDPOINT_URL, profiles, GOOGLE_APPLICATION_CREDENTIALS) apply first. Never printed nor saved.
    options: dict[str, Any] = field(default_factory=dict, metadata=SECRET)


@dataclass
class RepackConfig:
    """``maskahand shards repack``: every sample of a shard collection, globally shuffled into new shards."""

    target_size: int = 1_000_000_000  # bytes per output shard (~1 GB, as large WebDataset pipelines use)
    seed: int = 0  # the global shuffle
    prefix: str = "repacked"  # output shards PREFIX-000000.tar, ...

    def validate(self) -> None:
        if self.target_size < 1:
            raise ValueError("target_size must be >= 1 byte")
        if not self.prefix or "/" in self.prefix or "." in self.prefix:
            raise ValueError(f"prefix {self.prefix!r} must be non-empty, without '/' or '.'")


@dataclass
class RayConfig:
    address: Optional[str] = None  # None: RAY_ADDRESS if set, else an embedded local runtime
    num_cpus: Optional[int] = None  # local runtime only (None: all cores)
    num_gpus: Optional[int] = None  # local runtime only (None: autodetect)
    object_store_memory: Optional[int] = None  # bytes, local runtime only


# --------------------------------------------------------------------------------------------------
# Hand-interaction detector (seed 002 section 4.2; the authors' released hircnn)


@dataclass
class HircnnConfig:
    # the authors' hircnn_r50fpnv2_849.pth ({"model": state_dict}) or a plain state dict
    weights: Optional[str] = None
    score_threshold: float = 0.7  # authors' released detector
    max_detections: int = 2  # authors' released detector: at most 2 hands per image
    state_iou: float = 0.5  # contact / no-contact boxes overlapping above this: keep the higher score
    min_size: int = 800  # torchvision's Faster R-CNN input resizing (cost grows with it)
    max_size: int = 1333
    rpn_post_nms_top_n_test: int = 1000
    box_detections_per_img: int = 100  # before the hand-state rule and max_detections
    allow_random_weights: bool = False  # tests only: never silently use random weights otherwise


@dataclass
class MediapipeConfig:
    max_num_hands: int = 2
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    box_padding: float = 0.25  # landmark box grown by this fraction of its size per side
    model_complexity: Literal[0, 1] = 1


@dataclass
class PrecomputedConfig:
    path: Optional[str] = None  # a file, or a folder holding one file per video (<video_id>.pkl / .jsonl)
    format: Literal["auto", "epic", "jsonl"] = "auto"
    contact_states: list[int] = field(default_factory=lambda: [3, 4])  # EPIC HandState: portable, stationary
    # Added to the video reader's frame index before the lookup. None: +1 for video files (0-based
    # decode index -> EPIC's 1-based frame numbers), +0 for frame folders (index = file-name number).
    frame_offset: Optional[int] = None
    on_missing: Literal["error", "empty"] = "error"  # a frame absent from the file: fail, or no hands


# Where a machine's hircnn weights file is named once for every command (detector.hircnn.weights wins).
HIRCNN_WEIGHTS_ENV = "MASKAHAND_HIRCNN_WEIGHTS"
_warned_contact_not_judged = False  # the mediapipe fallback warns once per process


@dataclass
class DetectorConfig:
    # "auto": hircnn (the paper's detector) whenever its weights are configured (detector.hircnn.weights
    # or $MASKAHAND_HIRCNN_WEIGHTS), else mediapipe with a warning that contact is not judged.
    # validate() resolves it (load_config validates every recipe), so a saved config.yaml names the
    # backend that ran. The other names: the registered backends (maskahand.core.plugins.DETECTOR_BACKENDS).
    backend: str = field(default="auto", metadata={CHOICES: lambda: ["auto", *DETECTOR_BACKENDS.names()]})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=RUNTIME)
    batch_size: int = field(default=8, metadata=RUNTIME)
    amp: bool = field(default=True, metadata=RUNTIME)  # autocast on CUDA
    hircnn: HircnnConfig = field(default_factory=HircnnConfig)
    mediapipe: MediapipeConfig = field(default_factory=MediapipeConfig)
    precomputed: PrecomputedConfig = field(default_factory=PrecomputedConfig)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.resolve_backend()

    def resolve_backend(self) -> None:
        """Replace ``auto`` by the backend that runs; take hircnn weights from the environment if unset."""
        from_env = os.environ.get(HIRCNN_WEIGHTS_ENV) or None
        if self.backend in ("auto", "hircnn") and self.hircnn.weights is None and from_env:
            self.hircnn.weights = from_env
        if self.backend != "auto":
            return
        global _warned_contact_not_judged
        self.backend = "hircnn" if self.hircnn.weights else "mediapipe"
        if self.backend == "mediapipe" and not _warned_contact_not_judged:
            _warned_contact_not_judged = True
            logging.getLogger(__name__).warning(
                "detector: no hircnn weights configured (detector.hircnn.weights or $%s), so mediapipe "
                "finds hands and contact is NOT judged (every hand is 'unknown'; mine.unknown_rule decides); "
                "every clip's rule and the summary record this",
                HIRCNN_WEIGHTS_ENV,
            )


@dataclass
class DetectorTrainConfig:
    """100DOH-format (Pascal VOC XML) training of the hircnn architecture."""

    data_root: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    coco_weights: Optional[str] = None  # torchvision COCO fasterrcnn_resnet50_fpn_v2 weights file
    epochs: int = 12
    batch_size: int = 4
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: list[int] = field(default_factory=lambda: [8, 11])
    lr_gamma: float = 0.1
    warmup_iters: int = 500
    amp: bool = True
    workers: int = 4
    out_dir: str = "runs/detector"
    resume: Optional[str] = None
    print_freq: int = 20
    seed: int = 0
    hflip: float = 0.5  # horizontal-flip probability (torchvision detection reference)
    trainable_backbone_layers: int = 3  # with coco_weights: torchvision's default for a pretrained backbone
    max_iters_per_epoch: Optional[int] = None  # cap for quick runs
    save_every: int = 1  # keep model_<epoch>.pth every N epochs (0: only the latest checkpoint.pth)
    eval_every: int = 1  # evaluate on val_split every N epochs (0: never)
    eval_score_threshold: float = 0.05  # keep low-score boxes for AP (the deployed detector uses 0.7)
    test_split: str = "test"  # `maskahand detector eval` default split
    box_batch_size_per_image: int = 512  # sampled RoIs per image (torchvision default; the box head's cost)
    rpn_post_nms_top_n_train: int = 2000  # torchvision default
    # Multi-scale training: each image's min side drawn from these and detector.hircnn.min_size
    # (e.g. [480, 512, ..., 768]); empty: always detector.hircnn.min_size. Evaluation uses the latter.
    multiscale_min_sizes: list[int] = field(default_factory=list)

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0 <= self.trainable_backbone_layers <= 5:
            raise ValueError("trainable_backbone_layers must be in 0..5")
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError("hflip must be in [0, 1]")


# --------------------------------------------------------------------------------------------------
# Clip mining (seed 002 section 4.2)


@dataclass
class MineConfig:
    fps: float = 5.0  # paper
    clip_length: int = 32  # paper: 32 consecutive sampled frames
    clip_stride: int = 16  # paper: 16 sampled frames between clip starts
    contact_score: float = 0.99  # paper: keep a clip if a hand in contact has score >= 0.99
    # How hands whose state is `unknown` (mediapipe) count: "never", or "score" (score >= unknown_score).
    unknown_rule: Literal["never", "score"] = "score"
    unknown_score: float = 0.9
    # Videos shorter than one clip: "keep" them as one shorter clip (the authors' supervised loader
    # does this and Afformer accepts any T) when they have >= min_frames sampled frames; or "drop".
    short_video: Literal["keep", "drop"] = "keep"
    # 4 (0.8 s at 5 fps): Afformer accepts any T >= 1, but a clip this short shows little of an interaction.
    min_frames: int = 4
    # The last partial window: "align_end" adds one full clip ending at the last frame (an interaction in
    # the tail is not lost); "drop" ignores frames after the last regular window.
    tail: Literal["align_end", "drop"] = "align_end"
    # Which 32-frame windows are candidates (mine/rule.py). "authors": the authors' released miner
    # (affominer/miner.py + affodist/dataset.py): an interaction event opens clip_length - 1 sampled frames
    # before its first contact frame and closes after clip_length - 1 frames without one; clip_length /
    # clip_stride windows inside each event, the last one aligned to its end; a contact counts when
    # score > contact_score (strictly). "grid": fixed windows 0, S, 2S, ... over the whole video, a window
    # kept when one of its frames has score >= contact_score (the paper's text, read literally); `tail`
    # applies to it. Default: the authors' code (the paper's text fits both; measured in the README).
    windows: Literal["authors", "grid"] = "authors"
    frame_max_side: int = 480  # stored frames (enough for 256x256 synthesis) and their boxes' pixels
    # Detection sees each frame at the detector's own input size (the authors detect on full frames):
    # hircnn at torchvision's min_size/max_size rule, mediapipe at full size, precomputed at the storage
    # size (its boxes are normalized). This caps the detection frames' longer side further (None: no cap).
    detect_max_side: Optional[int] = None

    def validate(self) -> None:
        if self.clip_length < 1 or self.clip_stride < 1:
            raise ValueError("clip_length and clip_stride must be >= 1")
        if self.fps <= 0:
            raise ValueError("fps must be > 0")
        if self.min_frames < 1:
            raise ValueError("min_frames must be >= 1")
        if self.frame_max_side < 16:
            raise ValueError("frame_max_side must be >= 16")
        if self.detect_max_side is not None and self.detect_max_side < 16:
            raise ValueError("detect_max_side must be >= 16 or null")
        if not 0.0 <= self.contact_score <= 1.0:
            raise ValueError("contact_score must be in [0, 1]")


@dataclass
class MineInputConfig:
    # Manifests (--videos LIST.csv|.tsv|.jsonl|.parquet), video2dataset's url_list convention: the column
    # holding each video's path or URL ...
    url_col: str = "url"
    # ... an optional column whose value is the video's id (ledger, clip keys); absent or empty: the id
    # is the URL relative to the manifest's folder ...
    key_col: str = "key"
    # ... and an optional column of [start, end] spans in seconds: only those parts are mined, and no
    # clip crosses a span's edge. Every other column is carried into the clips' metadata (meta.source).
    clips_col: str = "clips"
    # the other columns carried into the clips (None: all; [] none). Each carried value is held in memory
    # until its video is mined: name only the ones you need for a manifest of many millions of rows.
    carry_columns: Optional[list[str]] = None
    # rows per Parquet/CSV batch read: manifests are streamed, never loaded whole
    batch_rows: int = field(default=65536, metadata=RUNTIME)


@dataclass
class MineRayConfig:
    # Miner actors (each decodes its videos one after another); None: the CPUs left after the detectors,
    # at least 2.
    decoders: Optional[int] = None
    cpus_per_decoder: float = 1.0
    detector_actors: Optional[int] = None  # None: one per GPU, else one CPU actor
    gpus_per_detector: float = 1.0
    cpus_per_detector: float = 1.0
    max_inflight_batches: int = 4  # backpressure, per miner: decoded batches not yet detected
    # Each miner opens its next video (a URL or tar member) and reads its first block in the background
    # while it mines the current one: the object store's per-video latency is not waited for. Outputs
    # are the same either way; local files are not prefetched (nothing to hide).
    prefetch: bool = True
    # A miner's batch of detector.batch_size frames may end one video and start the next, so a collection
    # of very short videos costs no more detector and scheduler calls than one long video of the same
    # frames. Outputs are the same either way; false: a batch never holds two videos.
    pack_videos: bool = True
    # Extra Ray resources each actor needs, e.g. {"decode": 1} with `ray start --resources '{"decode": 4}'`
    # on the nodes that should decode: places each stage on the nodes meant for it.
    decoder_resources: dict[str, float] = field(default_factory=dict)
    detector_resources: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# MaskAHand target synthesis (seed 002 section 4.2, tables 5 and 8, supplement table 6b)


@dataclass
class SynthConfig:
    variants: int = 4  # K targets per clip, sharing the stored frames
    hand_masks: int = 1  # paper (table 5, #Mh): 1 masks every interacting hand; 0 gives the "no mask" rows
    hand_mask_scale: float = 1.5  # paper: hand context mask ratio r = 1.5 (table 5)
    # random_sides (the authors' affodist/dataset.py): each side of the hand box moves out by
    # U(0, r-1) * sqrt(box area) on its own; centered: the box scaled r x about its centre.
    hand_mask_mode: Literal["random_sides", "centered"] = "random_sides"
    random_masks: int = 1  # paper: one random context mask of the same size (table 5)
    fill: Literal["noise", "zero"] = "noise"  # paper: uniform noise 0..255 beats black (2.36 vs 2.65)
    distortion_scale: float = 0.5  # paper: perspective distortion 0.5 (table 8)
    blur_kernel: int = 85  # paper: sqrt(256*256)/3, made odd
    blur_sigma: Optional[float] = None  # None: OpenCV's rule from the kernel size
    output_size: int = 256  # paper: 256 x 256
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=RUNTIME)
    batch_size: int = field(default=64, metadata=RUNTIME)

    def validate(self) -> None:
        if self.blur_kernel % 2 == 0 or self.blur_kernel < 1:
            raise ValueError("blur_kernel must be a positive odd number")
        if not 0.0 <= self.distortion_scale <= 1.0:
            raise ValueError("distortion_scale must be in [0, 1]")
        if self.variants < 1:
            raise ValueError("variants must be >= 1")
        if self.hand_mask_scale < 1.0:
            raise ValueError("hand_mask_scale must be >= 1 (the hand context mask must cover the hand box)")
        if self.hand_masks not in (0, 1):
            raise ValueError("hand_masks must be 0 or 1 (#Mh in table 5)")
        if self.random_masks < 0:
            raise ValueError("random_masks must be >= 0")
        if self.output_size < 8:
            raise ValueError("output_size must be >= 8")
        if self.blur_sigma is not None and self.blur_sigma <= 0:
            raise ValueError("blur_sigma must be > 0 or null")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


# --------------------------------------------------------------------------------------------------
# Afformer (seed 002 section 3, supplement tables 6a and 7)


@dataclass
class AfformerConfig:
    arch: Literal["afformer", "r50_deconv"] = "afformer"
    # r50_fpn: ResNet-50-FPN + fine-grained decoder (the paper). vitdet_b: the authors' second configuration
    # (showlab/afformer configs/opra/vitdet_b.yaml): ViTDet-B, its last block copied into a trainable image
    # path, + their SimpleDecoder (one cross-attention block, hidden 768); a finetune/pretrain recipe given
    # model.encoder=vitdet_b starts from VITDET_B_FINETUNE / VITDET_B_PRETRAIN below
    encoder: Literal["r50_fpn", "vitdet_b"] = "r50_fpn"
    hidden: int = 256  # paper
    heads: int = 4  # paper (head dim 64)
    mlp_ratio: float = 4.0  # paper
    image_levels: list[str] = field(default_factory=lambda: ["p4", "p3", "p2"])  # coarse to fine
    video_level: str = "p3"
    temporal_pyramid: bool = True  # T -> T/2 -> T/4 by 3D convs, kernel (3,1,1), stride (2,1,1)
    num_heatmaps: int = 1  # 1 for action-agnostic pretraining, 7 for OPRA
    num_actions: int = 0  # 0: no action head (pretraining); 7 for OPRA
    attention: Literal["efficient", "reference"] = "efficient"
    max_q_thw: list[int] = field(default_factory=lambda: [1, 64, 64])  # relative-position table extents
    # [clip length, h, w]: as the authors (max_kv_thw[0] = their clip_length_in_frames), the time table has
    # 2 * max_kv_thw[0] - 1 rows and frame k of a T-frame clip uses row T-1-k; recipes check their clips fit
    max_kv_thw: list[int] = field(default_factory=lambda: [32, 32, 32])
    backbone_weights: Optional[str] = None  # torchvision COCO fasterrcnn_resnet50_fpn_v2 weights file
    freeze_backbone: bool = False  # freeze the whole encoder (ResNet body + FPN)
    # ResNet stages left trainable (torchvision's convention; 3 would freeze conv1 and layer1). 5, as the
    # authors' encoder: the whole ResNet trains, at lr x backbone_lr_factor.
    trainable_backbone_layers: int = 5
    backbone_lr_factor: float = 0.1  # paper
    image_size: int = 256  # paper
    # --- the ViT of encoder=vitdet_b (defaults: ViTDet-B, detectron2 configs/common/models/mask_rcnn_vitdet.py);
    # tests and smoke runs shrink vit_dim / vit_depth / vit_heads. backbone_weights then names detectron2's
    # ViTDet COCO model_final_*.pkl or MAE's mae_pretrain_vit_base.pth
    vit_dim: int = 768  # embed_dim
    vit_depth: int = 12  # depth
    vit_heads: int = 12  # num_heads
    vit_patch: int = 16  # patch_size
    vit_window: int = 14  # window_size
    vit_global_blocks: list[int] = field(default_factory=lambda: [2, 5, 8, 11])  # not in window_block_indexes
    vit_img_size: int = 1024  # img_size: the global blocks' relative-position tables cover img_size / patch
    vit_pretrain_size: int = 224  # pretrain_img_size (absolute table 14 x 14 + a class-token row)
    # drop_path_rate, rising linearly over the blocks; only the trainable image copy uses it
    vit_drop_path: float = 0.1
    vit_trainable_blocks: int = 1  # vitdet_b.yaml encoder.init_args.trainable: 1
    vit_chunk: int = 8  # images per ViT pass (the authors run one at a time; the result is the same)
    # layer-wise lr decay (detectron2 get_vit_lr_decay_rate): a ViT parameter of layer l (0: patch/position
    # embeddings, i+1: block i) trains at lr * decay ** (vit_depth + 1 - l); 1.0: off (the R50 encoder)
    lr_layer_decay: float = 1.0

    @property
    def heatmap_size(self) -> int:
        """Side of the predicted heatmaps: the predictor upsamples the decoder's stride 4x (R50: stride 4
        -> the image size; ViTDet: stride 16 -> image_size / 4, 256 at the authors' 1024)."""
        return self.image_size if self.encoder == "r50_fpn" else self.image_size // (self.vit_patch // 4)

    def validate(self) -> None:
        if self.encoder == "vitdet_b":
            if self.arch != "afformer":
                raise ValueError("encoder=vitdet_b needs arch=afformer")
            if self.vit_dim != self.hidden:
                raise ValueError(
                    f"encoder=vitdet_b feeds the ViT width to the decoder: hidden ({self.hidden}) "
                    f"must equal vit_dim ({self.vit_dim})"
                )
            if self.vit_dim % self.vit_heads or self.vit_patch % 4 or self.image_size % (2 * self.vit_patch):
                raise ValueError(
                    "vit_dim must divide by vit_heads, vit_patch by 4, image_size by 2 * vit_patch"
                )
            if not 0 <= self.vit_trainable_blocks <= self.vit_depth:
                raise ValueError("vit_trainable_blocks must lie in 0..vit_depth")
            if any(not 0 <= i < self.vit_depth for i in self.vit_global_blocks):
                raise ValueError("vit_global_blocks must index blocks 0..vit_depth-1")
        if not 0.0 < self.lr_layer_decay <= 1.0:
            raise ValueError("lr_layer_decay must lie in (0, 1]")
        if self.hidden % self.heads != 0:
            raise ValueError("hidden must be divisible by heads")
        if not 1 <= len(self.image_levels) <= 3:
            raise ValueError("image_levels must list 1 to 3 of p2, p3, p4 (coarse to fine)")
        if len(self.max_q_thw) != 3 or len(self.max_kv_thw) != 3:
            raise ValueError("max_q_thw and max_kv_thw must be [t, h, w]")
        if self.num_heatmaps < 1 or self.num_actions < 0:
            raise ValueError("num_heatmaps must be >= 1 and num_actions >= 0")
        if not 0 <= self.trainable_backbone_layers <= 5:
            raise ValueError("trainable_backbone_layers must be in 0..5")


def check_clip_fits(model: AfformerConfig, frames: int, key: str) -> None:
    """Clips of ``frames`` frames (config key ``key``) need a time table sized for them (model.max_kv_thw[0])."""
    if frames > model.max_kv_thw[0]:
        raise ValueError(
            f"{key}={frames} is longer than model.max_kv_thw[0]={model.max_kv_thw[0]}, the clip length the "
            f"model's time table is sized for: set model.max_kv_thw=[{frames}, {model.max_kv_thw[1]}, "
            f"{model.max_kv_thw[2]}]"
        )


@dataclass
class OptimConfig:
    lr: float = 3e-4  # paper
    weight_decay: float = 0.05  # paper
    # the backbone's lr factor (paper: 0.1) lives in AfformerConfig.backbone_lr_factor
    schedule: Literal["cosine"] = "cosine"  # paper
    warmup_iters: int = 0  # linear warmup steps before the cosine decay
    min_lr_factor: float = 0.0  # cosine decays to lr * this at max_iters
    precision: Literal["fp32", "fp16", "bf16"] = "fp16"  # paper: 16-bit mixed precision
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW (torch default)
    grad_clip: Optional[float] = None  # max global grad norm (None: no clipping)

    def validate(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        if self.warmup_iters < 0 or not 0.0 <= self.min_lr_factor <= 1.0:
            raise ValueError("warmup_iters must be >= 0 and min_lr_factor in [0, 1]")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must be two numbers in [0, 1)")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError("grad_clip must be > 0 or null")


@dataclass
class TrainConfig:
    # RUNTIME fields may change when a run resumes; any other change is refused (changes the result).
    # the GLOBAL batch (all processes, all accumulation steps) of one optimiser step; paper: pretraining 32
    batch_size: int = 32
    max_iters: int = 5000
    num_frames: int = 32  # paper: the 32 mined frames
    workers: int = 4  # DataLoader workers per process (part of the data order, so not runtime-only)
    out_dir: str = field(default="runs/pretrain", metadata=RUNTIME)
    resume: Optional[str] = field(default=None, metadata=RUNTIME)
    log_every: int = field(default=20, metadata=RUNTIME)
    ckpt_every: int = field(default=500, metadata=RUNTIME)
    seed: int = 0
    # micro-batches per process per step: each process takes batch_size / (processes x accum_steps) at once
    accum_steps: int = 1
    # per-device cap on that micro-batch: the trainer picks the smallest accum_steps that fits (None: off)
    device_batch: Optional[int] = None
    # auto, cpu, cuda (torchrun: each process its LOCAL_RANK's GPU)
    device: str = field(default="auto", metadata=RUNTIME)
    keep_last: int = field(default=2, metadata=RUNTIME)  # checkpoints kept: the last N ...
    keep_every: int = field(default=0, metadata=RUNTIME)  # ... plus multiples of this step (0: none)
    image_every: int = field(default=500, metadata=RUNTIME)  # TensorBoard picture every N steps (0: never)
    eval_every: int = field(default=0, metadata=RUNTIME)  # task evaluation every N steps (0: at the end)
    # abort after this many non-finite losses in a row (each one is skipped and counted)
    max_nonfinite: int = field(default=5, metadata=RUNTIME)
    # recompute encoder/decoder blocks in backward: less memory, same results, more time (the task does
    # it: Afformer recipes; a task that cannot, e.g. hotspots, refuses the key)
    activation_checkpointing: bool = field(default=False, metadata=RUNTIME)
    shuffle: int = 200  # sample shuffle buffer per reader (0: in order)
    # pretraining reader: shards each DataLoader worker reads at once, interleaved (one shard per video:
    # the videos a worker mixes); the shard order is reshuffled every epoch
    open_shards: int = 16
    # Fine-tuning only: train the heatmaps at this size (28: the Interaction Hotspots protocol's ground truth
    # and resized predictions, as table 2's 28 x 28 rows were trained); None: the model's output size.
    heatmap_size: Optional[int] = None

    def validate(self) -> None:
        if self.batch_size < 1 or self.max_iters < 1 or self.num_frames < 1 or self.accum_steps < 1:
            raise ValueError("batch_size, max_iters, num_frames and accum_steps must be >= 1")
        if self.ckpt_every < 1 or self.log_every < 1 or self.keep_last < 1:
            raise ValueError("ckpt_every, log_every and keep_last must be >= 1")
        if min(self.keep_every, self.image_every, self.eval_every, self.workers, self.shuffle) < 0:
            raise ValueError("keep_every, image_every, eval_every, workers and shuffle must be >= 0")
        if self.max_nonfinite < 1:
            raise ValueError("max_nonfinite must be >= 1")
        if self.open_shards < 1:
            raise ValueError("open_shards must be >= 1")
        if self.device_batch is not None and self.device_batch < 1:
            raise ValueError("device_batch must be >= 1 or null")
        if self.heatmap_size is not None and self.heatmap_size < 1:
            raise ValueError("heatmap_size must be >= 1 or null")


# --------------------------------------------------------------------------------------------------
# Interaction Hotspots (seeds 000 S4/S5, 001 section 3; their code: Tushar-N/interaction-hotspots)


@dataclass
class HotspotsConfig:
    num_verbs: int = 7  # OPRA 7; EPIC-Hotspots 20 (seed 000 table S2)
    hidden: int = 2048  # paper: one LSTM layer, hidden 2048
    max_len: int = 8  # frames per training clip (their train.py --max_len); 32 at most
    pool: Literal["l2", "avg"] = "l2"  # paper: L2 pooling
    ant_loss: Literal["mse", "triplet", "none"] = "mse"  # paper: L2 on OPRA, triplet on EPIC
    mse_weight: float = 0.1  # paper: lambda_ant 0.1 (their code applies it to the L2 loss only)
    triplet_margin: float = 0.5  # paper
    triplet_weight: float = 1.0  # their code: the triplet loss is not weighted
    aux_weight: float = 1.0  # paper: lambda_aux 1
    # their dr50_n28 dilates only the first block of res4 (2) and res5 (4); "every_block" dilates all
    dilation: Literal["first_block", "every_block"] = "first_block"
    backbone_weights: Optional[str] = None  # torchvision ImageNet resnet50 state dict file (required)
    image_size: int = 224  # their crop; 28 x 28 features at 224

    def validate(self) -> None:
        if not 1 <= self.max_len <= 32:
            raise ValueError("max_len must be in 1..32")
        if self.num_verbs < 1 or self.hidden < 1:
            raise ValueError("num_verbs and hidden must be >= 1")
        if self.image_size % 8 != 0:
            raise ValueError("image_size must be a multiple of 8 (the backbone's stride)")


@dataclass
class HotspotsDataConfig:
    # opra: annotations ROOT/annotations/<split>.json (the evaluation reader's format), demo clip + verb, the
    # product image as the inactive image; epic_hotspots: their annotations.json (train_clips, inactive_images)
    dataset: Literal["opra", "epic_hotspots"] = "opra"
    annotations: Optional[str] = None  # default: per dataset under the root
    split: str = "train"
    fps: float = 5.0  # their OPRA frames: 5 fps
    epic_sample_rate: int = 10  # their EPIC clips: every 10th frame (6 fps)
    resize: int = 256  # their transforms: shorter side 256, random crop 224, horizontal flip
    crop: int = 224
    balance: bool = True  # their class-balancing weighted sampler (inverse frequency, capped)
    weight_cap: float = 100.0
    epochs: int = 20  # their train.py
    decay_after: int = 15  # lr / 10 after this epoch (their MultiStepLR)
    decay_factor: float = 0.1

    def validate(self) -> None:
        if self.crop > self.resize or self.crop % 8 != 0:
            raise ValueError("crop must be <= resize and a multiple of 8")
        if self.epochs < 1 or self.fps <= 0 or self.epic_sample_rate < 1 or self.weight_cap <= 0:
            raise ValueError("epochs, fps, epic_sample_rate and weight_cap must be positive")


# --------------------------------------------------------------------------------------------------
# Recipes: what each command loads (top-level keys are the override prefixes)


@dataclass
class VideoRecipe:
    video: VideoConfig = field(default_factory=VideoConfig)


@dataclass
class DetectorRecipe:
    video: VideoConfig = field(default_factory=VideoConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)


@dataclass
class DetectorTrainRecipe:
    detector: DetectorConfig = field(default_factory=lambda: DetectorConfig(backend="hircnn"))
    train: DetectorTrainConfig = field(default_factory=DetectorTrainConfig)


@dataclass
class MineRecipe:
    # The sampling rate is mine.fps and the stored size mine.frame_max_side: video.fps and
    # video.max_side are not read by mine, and a value that differs from them is refused (validate).
    # The other video.* keys (backend, folder_fps, threads) apply as given.
    video: VideoConfig = field(default_factory=VideoConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    mine: MineConfig = field(default_factory=MineConfig)
    shards: ShardWriterConfig = field(default_factory=ShardWriterConfig)
    input: MineInputConfig = field(default_factory=MineInputConfig)  # how --videos manifests are read
    ray: RayConfig = field(default_factory=RayConfig, metadata=RUNTIME)
    workers: MineRayConfig = field(default_factory=MineRayConfig, metadata=RUNTIME)
    storage: StorageConfig = field(default_factory=StorageConfig, metadata=RUNTIME)

    def validate(self) -> None:
        # Left at its default, or repeating the mine.* value (configs saved by older versions), is fine.
        if self.video.fps not in (VideoConfig.fps, self.mine.fps):
            raise ValueError(
                f"video.fps={self.video.fps:g} is not used by mine: set mine.fps={self.video.fps:g} "
                "(frames sampled per second)"
            )
        if self.video.max_side not in (None, self.mine.frame_max_side):
            raise ValueError(
                f"video.max_side={self.video.max_side} is not used by mine: set mine.frame_max_side="
                f"{self.video.max_side} for the stored frames (mine.detect_max_side caps detection)"
            )


@dataclass
class SynthRecipe:
    synth: SynthConfig = field(default_factory=SynthConfig)
    shards: ShardWriterConfig = field(default_factory=ShardWriterConfig)
    ray: RayConfig = field(default_factory=RayConfig, metadata=RUNTIME)
    gpus_per_worker: float = field(default=0.25, metadata=RUNTIME)
    cpus_per_worker: float = field(default=1.0, metadata=RUNTIME)
    # extra Ray resources per shard task
    worker_resources: dict[str, float] = field(default_factory=dict, metadata=RUNTIME)
    storage: StorageConfig = field(default_factory=StorageConfig, metadata=RUNTIME)


# --- model.encoder=vitdet_b: the authors' configs/opra/vitdet_b.yaml (showlab/afformer addd2a66) and the paper
# ("for the Afformer with a ViTDet encoder, we adjust the learning rate to 2e-4 and the spatial size to 1024
# ... these hyper-parameters remain consistent across all datasets, including MaskAHand pre-training").
# Applied to the recipe's defaults when model.encoder=vitdet_b is given (YAML or override); anything set
# explicitly still wins.
VITDET_B_MODEL = (
    "model.encoder=vitdet_b",
    "model.hidden=768",  # decoder: SimpleDecoder hidden_channels: 768 (= the ViT width)
    "model.heads=12",  # SimpleDecoder: num_heads = hidden_channels // 64
    "model.image_size=1024",  # data: Resize size [1024, 1024] (heatmaps: 1024 / 4 = 256)
    "model.max_q_thw=[1,64,64]",  # decoder: q_thw [1, 64, 64]
    "model.vit_trainable_blocks=1",  # encoder: ViTDetSimplePyramid trainable: 1
    # solver lr_factors: vitdet replaces the R50 recipe's {encoder: 0.1} with main.py's
    # get_vit_lr_decay_rate(num_layers=12, lr_decay_rate=0.7). As their main.py calls it, the rule keys on
    # names starting with "backbone", so in their run every factor is 1.0; lr_layer_decay=1.0 reproduces that
    "model.backbone_lr_factor=1.0",
    "model.lr_layer_decay=0.7",
    "optim.lr=0.0002",  # optimizer: AdamW lr 0.0002
    "optim.weight_decay=0.1",  # weight_decay 0.1; overrides pos_embed weight_decay 0.0 (the model's
    # no_weight_decay_names); get_default_optimizer_params(weight_decay_norm=0): norms as for R50
    "optim.precision=fp16",  # trainer: precision 16-mixed
)
VITDET_B_FINETUNE = VITDET_B_MODEL + (
    "model.max_kv_thw=[24,32,32]",  # decoder: kv_thw [clip_length_in_frames, 32, 32]
    "train.num_frames=24",  # data: clip_length_in_frames 24
    "train.batch_size=16",  # batch_size_per_gpu 2 x trainer.devices 8
    "train.max_iters=6000",  # trainer: max_steps 6000 (cosine T_max = max_steps)
    "train.eval_every=1000",  # trainer: val_check_interval 1000
    "eval.clip_length=24",  # clip_length_in_frames 24 (as for training)
    "eval.clip_stride=12",  # frames_between_clips 12
    "eval.clip_fps=2.0",  # frame_rate 2
    "eval.image_size=1024",  # dataset_val resize = dataset_train resize
)
# pretraining keeps its own data settings (batch 32 of the 32 mined frames, the paper): the model and solver
VITDET_B_PRETRAIN = VITDET_B_MODEL + ("model.max_kv_thw=[32,32,32]",)


@dataclass
class PretrainRecipe:
    PRESET_KEY: ClassVar[str] = "model.encoder"
    PRESETS: ClassVar[dict[str, tuple[str, ...]]] = {"vitdet_b": VITDET_B_PRETRAIN}
    model: AfformerConfig = field(default_factory=AfformerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)  # `pretrain --clips`: targets made each step
    storage: StorageConfig = field(default_factory=StorageConfig, metadata=RUNTIME)

    def validate(self) -> None:
        check_clip_fits(self.model, self.train.num_frames, "train.num_frames")


@dataclass
class HotspotsRecipe:
    model: HotspotsConfig = field(default_factory=HotspotsConfig)
    data: HotspotsDataConfig = field(default_factory=HotspotsDataConfig)
    # their train.py: Adam lr 1e-4, weight decay 5e-4 (L2, coupled), fp32, batch 128, 20 epochs
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-4, weight_decay=5e-4, precision="fp32", min_lr_factor=1.0)
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            batch_size=128, num_frames=8, out_dir="runs/hotspots", ckpt_every=200
        )
    )


@dataclass
class FinetuneRecipe:
    PRESET_KEY: ClassVar[str] = "model.encoder"
    PRESETS: ClassVar[dict[str, tuple[str, ...]]] = {"vitdet_b": VITDET_B_FINETUNE}
    # paper: up to 64 frames for supervised training, so a time table for 64-frame clips
    model: AfformerConfig = field(
        default_factory=lambda: AfformerConfig(num_heatmaps=7, num_actions=7, max_kv_thw=[64, 32, 32])
    )
    optim: OptimConfig = field(default_factory=OptimConfig)
    # the authors' configs/opra/r50fpn.yaml: 4000 steps, evaluation every 1000
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            batch_size=16, num_frames=64, max_iters=4000, eval_every=1000, out_dir="runs/finetune"
        )
    )
    eval: EvalConfig = field(default_factory=lambda: EvalConfig())  # clip sampling + periodic evaluation
    video: VideoConfig = field(default_factory=VideoConfig)
    storage: StorageConfig = field(default_factory=StorageConfig, metadata=RUNTIME)

    def validate(self) -> None:
        check_clip_fits(self.model, self.train.num_frames, "train.num_frames")
        size = self.train.heatmap_size
        if size is not None and size > self.model.image_size:
            raise ValueError(
                f"train.heatmap_size={size} is larger than model.image_size={self.model.image_size}"
            )


# --------------------------------------------------------------------------------------------------
# Evaluation (seed 002 section 5; the authors' configs/opra/r50fpn.yaml and data/opra; Hotspots eval)


@dataclass
class EvalConfig:
    protocol: Literal["256", "28", "both"] = "both"  # 256x256 (Afformer table 1) / 28x28 (Hotspots, table 2)
    clip_fps: float = 2.0  # authors' OPRA config: frame_rate 2
    clip_length: int = 32  # authors: clip_length_in_frames 32
    clip_stride: int = 16  # authors: frames_between_clips 16
    max_clips: Optional[int] = None  # cap on clips per video (None: every clip, as the authors)
    image_size: int = 256  # paper: image and frames resized to 256 x 256
    clip_batch: int = 4  # clips of one video per forward pass
    device: str = "auto"  # auto, cpu, cuda (torchrun: each process its LOCAL_RANK's GPU)
    seed: int = 0  # the 28x28 protocol's AUC tie-breaking jitter
    cache_dir: Optional[str] = None  # ground-truth cache when the annotations' folder is read-only
    overlay_fps: float = 10.0  # `ground --out *.mp4|.webm|.gif`: frames per second of the overlay video
    overlay_height: int = 256  # its panels' height in pixels (authors' demo: 256)

    def validate(self) -> None:
        if self.clip_fps <= 0 or self.clip_length < 1 or self.clip_stride < 1 or self.clip_batch < 1:
            raise ValueError("clip_fps must be > 0; clip_length, clip_stride and clip_batch >= 1")
        if self.max_clips is not None and self.max_clips < 1:
            raise ValueError("max_clips must be >= 1 or null")
        if self.image_size % 32 != 0:
            raise ValueError("image_size must be a multiple of 32")
        if self.overlay_fps <= 0 or self.overlay_height < 32:
            raise ValueError("overlay_fps must be > 0 and overlay_height >= 32")


@dataclass
class EvalRecipe:
    eval: EvalConfig = field(default_factory=EvalConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    storage: StorageConfig = field(default_factory=StorageConfig, metadata=RUNTIME)


# --------------------------------------------------------------------------------------------------
# maskahand serve: the grounding page


@dataclass
class ServeConfig:
    max_upload_mb: float = 64.0  # one request's body (video + image); larger ones are refused (413)
    max_video_seconds: float = 120.0  # longer uploaded videos are refused before decoding
    max_image_pixels: int = 40_000_000  # target images above this are refused before decoding
    queue_size: int = 4  # requests waiting for the one inference slot; more are refused (503, busy)
    examples_dir: Optional[str] = None  # data root holding the shared examples (videos/, images/)
    overlay_format: Literal["webm", "mp4"] = "webm"  # what the page plays (VP9 WebM plays in every browser)

    def validate(self) -> None:
        if self.max_upload_mb <= 0 or self.max_video_seconds <= 0 or self.max_image_pixels < 1:
            raise ValueError("max_upload_mb, max_video_seconds and max_image_pixels must be > 0")
        if self.queue_size < 0:
            raise ValueError("queue_size must be >= 0")


@dataclass
class ServeRecipe:
    eval: EvalConfig = field(default_factory=EvalConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
