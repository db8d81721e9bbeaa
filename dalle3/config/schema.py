"""Typed config schema for every dalle3 stage.

One dataclass per config group. YAML under ``conf/`` only sets values; a key that is
not declared here fails at composition time (OmegaConf struct mode), and
:func:`dalle3.config.validate.validate` checks the shared blocks before any heavy work; each
stage's own block is checked by the ``validate_<stage>`` function of its config module.
Each field has a one-line docstring (the string literal under it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from dalle3.config.captioner import CaptionerConfig
from dalle3.config.eval import EvalConfig
from dalle3.config.ldm import LDMConfig
from dalle3.config.pipeline import PipelineConfig
from dalle3.config.recaption import RecaptionConfig
from dalle3.config.upsample import UpsampleConfig
from dalle3.config.validate import check_choice, check_positive, check_range, per_device_batch
from dalle3.config.world import (DSC_ORDERS, IMAGE_FORMATS, DataGenConfig, SplitSizes,  # noqa: F401 (re-exported)
                                 WorldConfig, validate_datagen, validate_world)

CAPTION_SOURCES = ("alt", "ssc", "dsc", "blend")
SYNTHETIC_SOURCES = ("ssc", "dsc")


@dataclass
class PathsConfig:
    data_dir: str = "data/world"
    "Where `dalle3-data` writes the synthetic world and stages read it."
    out_dir: str = "outputs"
    "Root for run folders, checkpoints, logs and exported models."
    run_dir: str = "${paths.out_dir}/${stage}"
    "This run's folder (Hydra's run dir points here)."


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
    keep_checkpoints: bool = False
    "Keep every periodic checkpoint (stage=ldm: the evaluation scores them against the step); false: only the latest and last.ckpt."
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
    stage: str = "world"
    "Which stage the entry point runs (see conf/stage/)."
    seed: int = 0
    "Global seed for model init and sampling."
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
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    "`dalle3-pipeline`: the set of ldm runs the recipe trains (conf/pipeline/)."
    upsample: UpsampleConfig = field(default_factory=UpsampleConfig)
    "Prompt upsampling: the LM that rewrites short prompts into descriptive captions (conf/upsample/)."


def validate_caption(cfg: Any, key: str = "caption") -> None:
    """Check the ``caption`` block (one-line :class:`ConfigError`)."""
    check_choice(f"{key}.source", cfg.source, CAPTION_SOURCES)
    check_choice(f"{key}.synthetic", cfg.synthetic, SYNTHETIC_SOURCES)
    check_range(f"{key}.ratio", cfg.ratio, 0.0, 1.0)


def validate_trainer(cfg: Any, key: str = "trainer") -> int:
    """Check the trainer block and return the world size it implies."""
    check_choice(f"{key}.accelerator", cfg.accelerator, ("cpu", "gpu", "cuda", "auto"))
    check_choice(f"{key}.strategy", cfg.strategy, ("auto", "ddp", "deepspeed"))
    check_positive(f"{key}.devices", cfg.devices)
    check_positive(f"{key}.num_nodes", cfg.num_nodes)
    if cfg.strategy == "deepspeed":
        check_choice(f"{key}.zero_stage", cfg.zero_stage, (1, 2, 3))
    return cfg.devices * cfg.num_nodes


def validate(cfg: Any) -> None:
    """Check the shared blocks of a composed root config (DictConfig or dataclass).

    Every stage calls this first, then the ``validate_<section>`` of its own config module,
    then checks the files it reads (:func:`dalle3.data.shards.validate_shards`).
    """
    validate_world(cfg.world)
    validate_datagen(cfg.datagen)
    validate_caption(cfg.caption)
    world_size = validate_trainer(cfg.trainer)
    per_device_batch(cfg.data.global_batch_size, world_size)
