"""Typed config of the latent diffusion model and its VAE . Owned by dalle3/ldm.

One block per part (text encoder, U-Net, VAE, noise schedule) and one per job (VAE
training, LDM training, sample logging, latent precompute, generation). A part whose
``pretrained`` is set is loaded from that local folder (or hub name, where a hub is
reachable); otherwise it is built from the size fields, which is what ``tiny`` does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from dalle3.config.eval import JudgeConfig
from dalle3.config.validate import ConfigError, check_choice, check_positive, check_range

TEXT_ENCODER_KINDS = ("clip", "t5", "open_clip", "world_clip")
OPEN_CLIP_LAYERS = ("last", "penultimate")
PREDICTION_TYPES = ("epsilon", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SAMPLERS = ("ddim", "dpm")


@dataclass
class TextEncoderConfig:
    kind: str = "clip"
    "clip (transformers CLIPTextModel) | t5 (transformers T5EncoderModel) | open_clip (an open_clip CLIP's text tower, converted once to a CLIPTextModel + CLIPTokenizer over open_clip's BPE and saved to `path`, as Stable Diffusion 2 did) | world_clip (a CLIPTextModel folder that `dalle3-train stage=text_encoder` wrote: the text tower of a world CLIP trained on the train split's captions, over the world's words; what the pipeline uses); always frozen."
    pretrained: Optional[str] = None
    "clip/t5: local folder or hub name of a pretrained encoder; null builds the tiny one below (and saves it to `path`). open_clip (required): MODEL:TAG_OR_FILE, e.g. ViT-H-14:laion2b_s32b_b79k or ViT-B-32:/models/clip.safetensors (or hf-hub:org/repo, local-dir:/path); only CLIP-BPE models with a plain causal text transformer convert. world_clip (required): the folder stage=text_encoder converted (<run_dir>/converted)."
    layer: str = "last"
    "open_clip (and stage=text_encoder's conversion): the per-token features the U-Net cross-attends to, ln_final of the last | penultimate block's output (penultimate drops the last block at conversion: Stable Diffusion 2's choice)."
    subfolder: Optional[str] = None
    "Subfolder of `pretrained` holding the encoder (e.g. text_encoder in a Stable Diffusion folder)."
    tokenizer_subfolder: Optional[str] = None
    "Subfolder of `pretrained` holding the tokenizer (e.g. tokenizer); null: the encoder's own folder."
    path: str = "${paths.out_dir}/parts/text_encoder"
    "Tiny and open_clip: where the built (tiny) or converted (open_clip) encoder and its tokenizer are saved once and reloaded; a folder built from another source fails, so give each encoder its own path."
    max_length: int = 64
    "Tokens per prompt (padded/truncated); the diffusers export uses the same."
    hidden_size: int = 64
    "Tiny only: width (= the U-Net's cross_attention_dim)."
    num_layers: int = 2
    "Tiny only: transformer layers."
    num_heads: int = 2
    "Tiny only: attention heads."
    seed: int = 0
    "Tiny only: seed of the frozen encoder's random weights."
    clip: JudgeConfig = field(default_factory=JudgeConfig)
    "The world CLIP that `dalle3-train stage=text_encoder` trains on the train split's captions and converts for kind=world_clip: the judge's recipe and sizes (`eval.judge`; model, pretrained and export unused: it exports to <run_dir>/export). A network of its own: the judge trains on the judge split."


@dataclass
class UNetConfig:
    pretrained: Optional[str] = None
    "Local folder or hub name of a pretrained UNet2DConditionModel; null: build from the fields below."
    subfolder: Optional[str] = None
    "Subfolder of `pretrained` (unet in a Stable Diffusion folder)."
    block_out_channels: List[int] = field(default_factory=lambda: [32, 64])
    "Channels per resolution level."
    down_block_types: List[str] = field(default_factory=lambda: ["DownBlock2D", "CrossAttnDownBlock2D"])
    "diffusers down blocks, one per level."
    up_block_types: List[str] = field(default_factory=lambda: ["CrossAttnUpBlock2D", "UpBlock2D"])
    "diffusers up blocks, one per level (mirror of the down blocks)."
    layers_per_block: int = 1
    "ResNet layers per block."
    attention_head_dim: int = 8
    "Channels per attention head."
    norm_num_groups: int = 8
    "GroupNorm groups (must divide every block width)."
    pooled_text: bool = False
    ("Also add the prompt's mean text feature to the timestep embedding (diffusers' class_embed_type="
     "'projection'), so every ResNet block at every level sees the whole prompt; off: text enters through "
     "cross-attention only, as in Stable Diffusion. A U-Net built with it needs its class_labels, which "
     "dalle3's sampling passes and a plain StableDiffusionPipeline does not.")


@dataclass
class VAEConfig:
    pretrained: Optional[str] = "${paths.out_dir}/vae/vae"
    "Folder of the AutoencoderKL that latents/ldm/generate use (the vae stage writes it), or a hub name."
    subfolder: Optional[str] = None
    "Subfolder of `pretrained` (vae in a Stable Diffusion folder)."
    block_out_channels: List[int] = field(default_factory=lambda: [16, 32, 64])
    "vae stage: channels per level; len-1 downsamplings (3 levels: 4x)."
    layers_per_block: int = 1
    "vae stage: ResNet layers per block."
    latent_channels: int = 4
    "vae stage: latent channels."
    norm_num_groups: int = 8
    "vae stage: GroupNorm groups (must divide every width)."


@dataclass
class NoiseConfig:
    num_train_timesteps: int = 1000
    "DDPM training timesteps."
    beta_schedule: str = "scaled_linear"
    "linear | scaled_linear (Stable Diffusion) | squaredcos_cap_v2 (cosine)."
    beta_start: float = 0.00085
    "First beta (Stable Diffusion's)."
    beta_end: float = 0.012
    "Last beta (Stable Diffusion's)."
    prediction_type: str = "epsilon"
    "What the U-Net predicts: epsilon | v_prediction."
    sampler: str = "ddim"
    "Sampling scheduler: ddim | dpm (DPM-Solver++ multistep)."


@dataclass
class VAETrainConfig:
    lr: float = 1e-3
    "AdamW learning rate."
    kl_weight: float = 1e-6
    "Weight of the KL term (small: a near-deterministic autoencoder, as in Stable Diffusion's)."
    weight_decay: float = 0.0
    "AdamW weight decay."
    schedule: str = "constant"
    "Learning rate over training: constant, or cosine (decays to 0 at trainer.max_steps)."


@dataclass
class LDMTrainConfig:
    lr: float = 1e-3
    "AdamW learning rate (after warmup)."
    weight_decay: float = 1e-2
    "AdamW weight decay."
    warmup_steps: int = 50
    "Linear learning-rate warmup steps."
    lr_schedule: str = "constant"
    "After warmup: constant, or cosine (decays to lr * min_lr_ratio at trainer.max_steps)."
    min_lr_ratio: float = 0.0
    "With lr_schedule=cosine: the learning rate at the last step, as a share of lr."
    caption_dropout: float = 0.1
    "Probability of training on the empty prompt (for classifier-free guidance)."
    ema_decay: float = 0.999
    "EMA decay per update (0: no EMA)."
    ema_every_n_steps: int = 1
    "Update the EMA every N optimizer steps."
    min_snr_gamma: Optional[float] = None
    "Min-SNR loss weighting gamma (Hang et al. 2023; 5.0 is their choice); null: plain MSE."
    offset_noise: float = 0.0
    "Offset-noise strength (per-channel constant added to the noise); 0: off."
    gradient_checkpointing: bool = False
    "Recompute U-Net activations in backward (less memory, more compute)."
    use_latents: bool = True
    "Read precomputed latent shards (`ldm.latents.out_dir`) when they exist; else encode images on the fly."
    use_text_cache: bool = True
    "Train on the text embeddings stored in the latent shards (`ldm.latents.precompute_text`) when every shard's manifest says it has them, instead of running the text encoder each step; the empty prompt (caption dropout) is still encoded, once."


@dataclass
class SampleConfig:
    every_n_steps: int = 250
    "Log sample images for the fixed prompts every N steps (0: never)."
    prompts: List[str] = field(default_factory=lambda: [
        "a red circle", "a blue square", "a green triangle", "a large yellow circle in the top left",
    ])
    "Fixed prompts sampled during training."
    guidance: float = 3.0
    "Classifier-free guidance scale of the logged samples."
    steps: int = 25
    "Sampler steps of the logged samples."
    seed: int = 0
    "Noise seed of the logged samples (fixed, so grids are comparable across steps)."


@dataclass
class LatentsConfig:
    out_dir: str = "${paths.out_dir}/latents"
    "Where the latent shards go (one folder per split); ldm training reads `<out_dir>/train`."
    splits: List[str] = field(default_factory=lambda: ["train", "val"])
    "Splits of `paths.data_dir` to encode."
    batch_size: int = 64
    "Images per VAE forward."
    precompute_text: bool = False
    "Also store the frozen text encoder's per-token hidden states of every caption each sample has (alt, ssc, dsc: the caption is picked at load time) as `{key}.text.safetensors` (float16, [max_length, width] per kind); `ldm.train.use_text_cache` then skips the encoder in training. Costs 2*max_length*width bytes per caption (SD2's 77x1024: 154 kB). Shards done without it are redone."
    lease_timeout_s: float = 300.0
    "A shard's lease whose heartbeat is older than this is taken over (as recaption.lease_timeout_s); a holder on the same host whose pid is dead is taken over at once."


@dataclass
class GenerateConfig:
    prompt: str = "a red circle"
    "Prompt to sample (`dalle3-generate prompt=...`)."
    n: int = 4
    "Images to generate."
    guidance: float = 5.0
    "Classifier-free guidance scale."
    steps: int = 25
    "Sampler steps."
    seed: int = 0
    "Noise seed."
    ckpt_dir: str = "${ldm.run_dir}"
    "The ldm run whose checkpoint and EMA weights are used (its `checkpoints/last.ckpt`)."
    checkpoint: Optional[str] = None
    "Explicit checkpoint (a .ckpt file or a DeepSpeed checkpoint folder); null: the run's last."
    use_ema: bool = True
    "Sample with the EMA weights (false: the raw weights)."
    export_dir: Optional[str] = "${paths.run_dir}/pipeline"
    "Also export a diffusers StableDiffusionPipeline folder here (null: no export)."


@dataclass
class LDMConfig:
    name: str = "tiny"
    "Size preset (conf/ldm/)."
    run_dir: str = "${paths.out_dir}/ldm/${caption.source}_${caption.synthetic}${caption.ratio}_seed${seed}"
    "The ldm run of this caption setting and seed: stage=ldm trains into it (with its run.json), generate reads it. Two seeds are two runs."
    pretrained: Optional[str] = None
    "Local folder or hub name of a whole Stable-Diffusion-layout model; presets point each part's `pretrained` at it."
    image_size: int = 32
    "Image side the VAE sees (the data layer resizes to it); latents are image_size / 2**(levels-1)."
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    "The frozen text encoder and its tokenizer."
    unet: UNetConfig = field(default_factory=UNetConfig)
    "The denoising U-Net."
    vae: VAEConfig = field(default_factory=VAEConfig)
    "The AutoencoderKL (frozen during ldm training)."
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    "DDPM training schedule, prediction target and sampler."
    vae_train: VAETrainConfig = field(default_factory=VAETrainConfig)
    "The vae stage's optimisation and loss."
    train: LDMTrainConfig = field(default_factory=LDMTrainConfig)
    "The ldm stage's optimisation, caption dropout, EMA and loss options."
    sample: SampleConfig = field(default_factory=SampleConfig)
    "Sample images logged during ldm training."
    latents: LatentsConfig = field(default_factory=LatentsConfig)
    "The latents stage (VAE-encode shards once)."
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    "The generate stage (`dalle3-generate`)."


def validate_ldm(cfg: Any, key: str = "ldm") -> None:
    """Raise a one-line :class:`ConfigError` naming the first bad ``ldm.*`` value."""
    check_choice(f"{key}.text_encoder.kind", cfg.text_encoder.kind, TEXT_ENCODER_KINDS)
    check_choice(f"{key}.text_encoder.layer", cfg.text_encoder.layer, OPEN_CLIP_LAYERS)
    if cfg.text_encoder.kind in ("open_clip", "world_clip") and not cfg.text_encoder.pretrained:
        allowed = ("MODEL:TAG_OR_FILE, e.g. ViT-H-14:laion2b_s32b_b79k" if cfg.text_encoder.kind == "open_clip"
                   else "the folder `dalle3-train stage=text_encoder` converts (<run_dir>/converted)")
        raise ConfigError(f"{key}.text_encoder.pretrained is not set for kind={cfg.text_encoder.kind}; "
                          f"allowed: {allowed}")
    check_choice(f"{key}.noise.prediction_type", cfg.noise.prediction_type, PREDICTION_TYPES)
    check_choice(f"{key}.noise.beta_schedule", cfg.noise.beta_schedule, BETA_SCHEDULES)
    check_choice(f"{key}.noise.sampler", cfg.noise.sampler, SAMPLERS)
    check_choice(f"{key}.vae_train.schedule", cfg.vae_train.schedule, ("constant", "cosine"))
    check_choice(f"{key}.train.lr_schedule", cfg.train.lr_schedule, ("constant", "cosine"))
    check_range(f"{key}.train.min_lr_ratio", cfg.train.min_lr_ratio, 0.0, 1.0)
    check_range(f"{key}.train.caption_dropout", cfg.train.caption_dropout, 0.0, 1.0)
    check_range(f"{key}.train.ema_decay", cfg.train.ema_decay, 0.0, 1.0)
    check_positive(f"{key}.train.ema_every_n_steps", cfg.train.ema_every_n_steps)
    check_range(f"{key}.train.offset_noise", cfg.train.offset_noise, 0.0, 1.0)
    if cfg.train.min_snr_gamma is not None and cfg.train.min_snr_gamma <= 0:
        raise ConfigError(f"{key}.train.min_snr_gamma={cfg.train.min_snr_gamma!r}; allowed: a positive number or null")
    check_positive(f"{key}.text_encoder.max_length", cfg.text_encoder.max_length)
    if cfg.latents.lease_timeout_s is None or cfg.latents.lease_timeout_s <= 0:
        raise ConfigError(f"{key}.latents.lease_timeout_s={cfg.latents.lease_timeout_s!r}; allowed: a positive "
                          "number of seconds")
    check_positive(f"{key}.image_size", cfg.image_size)
    levels = 2 ** (len(cfg.vae.block_out_channels) - 1)
    if cfg.image_size % levels:
        raise ConfigError(f"{key}.image_size={cfg.image_size} is not divisible by the VAE's downsampling {levels}; "
                          f"allowed: a multiple of {levels}")
    unet = cfg.unet
    if not unet.pretrained and len(unet.down_block_types) != len(unet.block_out_channels):
        raise ConfigError(f"{key}.unet.down_block_types has {len(unet.down_block_types)} entries for "
                          f"{len(unet.block_out_channels)} block_out_channels; allowed: one per level")
    if cfg.sample.every_n_steps < 0:
        raise ConfigError(f"{key}.sample.every_n_steps={cfg.sample.every_n_steps}; allowed: >= 0")
    check_positive(f"{key}.generate.n", cfg.generate.n)
    check_positive(f"{key}.generate.steps", cfg.generate.steps)
