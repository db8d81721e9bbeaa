"""Typed config schema for every dalle3 stage.

One dataclass per config group. YAML under ``conf/`` only sets values; a key that is
not declared here fails at composition time (OmegaConf struct mode), and
:func:`dalle3.config.validate.validate` checks values before any heavy work.
Each field has a one-line docstring (the string literal under it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from dalle3.config.captioner import CaptionerConfig
from dalle3.config.eval import EvalConfig
from dalle3.config.ldm import LDMConfig
from dalle3.config.recaption import RecaptionConfig

CAPTION_SOURCES = ("alt", "ssc", "dsc", "blend")
SYNTHETIC_SOURCES = ("ssc", "dsc")
DSC_ORDERS = ("reading", "shuffled")
"""Allowed ``world.dsc_order`` values."""
IMAGE_FORMATS = ("png", "jpg")


@dataclass
class PathsConfig:
    data_dir: str = "data/world"
    "Where `dalle3-data` writes the synthetic world and stages read it."
    out_dir: str = "outputs"
    "Root for run folders, checkpoints, logs and exported models."
    run_dir: str = "${paths.out_dir}/${stage}"
    "This run's folder (Hydra's run dir points here)."


@dataclass
class WorldConfig:
    image_size: int = 64
    "Rendered image side in pixels (32 and 64 are supported)."
    min_objects: int = 1
    "Fewest objects in a scene."
    max_objects: int = 4
    "Most objects in a scene (at most 9: one per grid cell)."
    sign_rate: float = 0.3
    "Share of scenes that show a sign with a word from the lexicon."
    alt_wrong_count_rate: float = 0.3
    "Share of alt-texts that state a wrong count of the main subject."
    alt_wrong_position_rate: float = 0.3
    "Share of alt-texts that state a wrong position of the main subject."
    alt_colour_rate: float = 0.0
    "Share of alt-texts that keep the subject's colour (0: alt never states colours)."
    alt_noise_rate: float = 0.6
    "Share of alt-texts with web noise added (file names, shop words, unrelated words)."
    alt_empty_rate: float = 0.05
    "Share of empty alt-texts."
    dsc_order: str = "reading"
    """Order of the objects in a descriptive caption: ``reading`` (colour-shape groups by
    their first member in reading order, top left to bottom right, and each group's members
    likewise, as a person scanning the picture would) or ``shuffled`` (random order)."""
    image_format: str = "png"
    "Image member written to shards: png (lossless) or jpg."
    jpeg_quality: int = 95
    "JPEG quality when image_format=jpg."


@dataclass
class SplitSizes:
    train: int = 4096
    "Samples in the `train` split (alt-text pretraining, recaptioning, LDM training)."
    val: int = 512
    "Samples in the `val` split (held out for evaluation)."
    annotated: int = 8192
    "Samples in the `annotated` split (stands in for the hand-written SSC/DSC corpora). With 2,048 the tiny DSC captioner memorises them within its training budget (benchmarks/RESULTS.md)."


@dataclass
class DataGenConfig:
    sizes: SplitSizes = field(default_factory=SplitSizes)
    "Number of samples per split."
    shard_size: int = 1024
    "Samples per tar shard."
    seed: int = 0
    "Seed of the world; the same seed writes byte-identical shards."
    workers: int = 2
    "Processes writing shards in parallel."
    overwrite: bool = False
    "Rewrite shards that already exist."


@dataclass
class DataConfig:
    train_shards: str = "${paths.data_dir}/train"
    "Training shards: a folder, glob, brace pattern, list file or pipe: URL (comma-separated mixes allowed)."
    val_shards: str = "${paths.data_dir}/val"
    "Validation shards, same forms as train_shards."
    global_batch_size: int = 64
    "Batch summed over all ranks; the per-device batch is derived and must divide evenly."
    num_workers: int = 2
    "DataLoader workers per rank."
    epoch_samples: int = 8192
    "Samples per epoch over all ranks (each rank yields epoch_samples // world // per-device batch batches: fixed length, so ranks never hang)."
    resampled: bool = True
    "Draw shards with replacement per worker (no starvation with uneven shard counts)."
    shuffle_buffer: int = 1000
    "Sample shuffle buffer (0: no shuffling)."
    image_size: int = 64
    "Images are resized to this side after decoding."
    val_samples: int = 256
    "Validation samples read per rank (not resampled)."
    sidecar_dir: Optional[str] = None
    "Folder of recaption caption sidecars (`recaption.mode=sidecar`) joined at load time; null: none."


@dataclass
class CaptionConfig:
    source: str = "blend"
    "Caption used for training: alt | ssc | dsc | blend."
    synthetic: str = "dsc"
    "Synthetic caption used by blend: ssc | dsc."
    ratio: float = 0.95
    "Blend only: probability of the synthetic caption per sample (DALL-E 3: 0.95)."
    seed: int = 0
    "Seed of the per-sample blend draw (with the sample key and epoch)."


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    "cpu | gpu | auto."
    devices: int = 1
    "Processes (GPUs) per node."
    num_nodes: int = 1
    "Nodes in the job."
    strategy: str = "auto"
    "auto | ddp | deepspeed (the ZeRO stage comes from zero_stage)."
    zero_stage: int = 0
    "DeepSpeed ZeRO stage 1-3 when strategy=deepspeed."
    offload: bool = False
    "ZeRO-3: offload parameters and optimizer state to CPU memory."
    precision: str = "32-true"
    "Lightning precision: 32-true on CPU, bf16-mixed on GPU."
    max_steps: int = 1000
    "Optimizer steps to train for."
    val_check_interval: int = 250
    "Validate every N training steps."
    log_every_n_steps: int = 10
    "Log training metrics every N steps."
    gradient_clip_val: float = 1.0
    "Clip the global gradient norm (0: off)."
    ckpt_every_n_steps: int = 250
    "Save a resumable checkpoint every N steps."
    resume: Optional[str] = "auto"
    "auto: resume from run_dir's last checkpoint if any; null: start fresh; or a path."
    progress_bar: bool = True
    "Show Lightning's progress bar."
    find_unused_parameters: bool = False
    "DDP: allow parameters without gradients (e.g. a contrastive head with weight 0)."
    limit_val_batches: int = 8
    "Validation batches per rank at each validation."
    cpu_threads: Optional[int] = None
    "Torch threads per process on the CPU; null: OMP_NUM_THREADS if set, else the cores shared among trainer.devices processes."


@dataclass
class RootConfig:
    stage: str = "data"
    "Which stage the entry point runs (see conf/stage/)."
    seed: int = 0
    "Global seed for model init and sampling."
    prompt: Optional[str] = None
    "`dalle3-generate prompt=...`: the prompt (null: ldm.generate.prompt)."
    n: Optional[int] = None
    "`dalle3-generate n=...`: images to generate (null: ldm.generate.n)."
    guidance: Optional[float] = None
    "`dalle3-generate guidance=...`: classifier-free guidance scale (null: ldm.generate.guidance)."
    steps: Optional[int] = None
    "`dalle3-generate steps=...`: sampler steps (null: ldm.generate.steps)."
    paths: PathsConfig = field(default_factory=PathsConfig)
    "Folders."
    world: WorldConfig = field(default_factory=WorldConfig)
    "The synthetic world's rendering and caption-defect rates."
    datagen: DataGenConfig = field(default_factory=DataGenConfig)
    "`dalle3-data`: split sizes, sharding and seed."
    data: DataConfig = field(default_factory=DataConfig)
    "Shard reading for training and evaluation."
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    "Caption source and blend ratio."
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    "Lightning Trainer and distributed strategy."
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    "The CoCa captioner: size, tokenizer, losses, optimisation, decoding."
    ldm: LDMConfig = field(default_factory=LDMConfig)
    "The latent diffusion model, its VAE and text encoder."
    recaption: RecaptionConfig = field(default_factory=RecaptionConfig)
    "The distributed recaption job: input shards, captioners, output mode, batching."
    eval: EvalConfig = field(default_factory=EvalConfig)
    "The evaluation stage: CLIP score and prompt-following checks of ldm runs."
