"""Configuration sections of the pipeline stages (units in each field's description)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from glitchflow.config.base import Strict
from glitchflow.config.signal import QTransformConfig


class ResourcesConfig(Strict):
    """Ray resources for a stage's workers; a GPU is used when ``gpus_per_worker > 0``."""

    workers: int = Field(2, ge=1, description="actors (or training workers) to run")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)


class PreprocessConfig(Strict):
    """Cutting conditioned segments into windows and writing the spectrogram dataset."""

    window: float = Field(6.0, gt=0, description="window duration (s), a multiple of time_step")
    stride: float = Field(3.0, gt=0, description="window start spacing (s); starts at GPS k*stride")
    channels: list[str] | None = Field(
        None, description="auxiliary channels; None = every channel in the frames"
    )
    frames_per_block: int = Field(
        4, ge=1, description="consecutive frames conditioned together (one Ray Data block)"
    )
    resources: ResourcesConfig = ResourcesConfig(workers=2, cpus_per_worker=0.5)
    rows_per_file: int = Field(64, ge=1, description="most windows per Parquet file of a block")


class HvetoConfig(Strict):
    """Hierarchical veto rounds (thresholds in SNR^2, windows in seconds)."""

    snr2_thresholds: list[float] = Field(default_factory=lambda: [20.0, 40.0, 80.0, 160.0])
    windows: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    min_significance: float = Field(5.0, gt=0, description="stop when the best round is weaker")
    max_rounds: int = Field(10, ge=1)


class ScanConfig(Strict):
    """Channel selection (the seed's ANNALISA with calibrated significance) and hveto."""

    sample_rate: float = Field(
        2048.0, gt=0, description="analysis rate of the scan (Hz); above 2x the band is enough"
    )
    qtransform: QTransformConfig = Field(
        QTransformConfig(q=12.0, frange=(8.0, 500.0), n_freq=64, time_step=0.09375),
        description="the seed scanned 8-50 Hz (scattered light); the default covers 8-500 Hz",
    )
    snr2_threshold: float = Field(20.0, gt=0, description="peak threshold (SNR^2)")
    cluster_window: float = Field(
        0.25, gt=0, description="peaks closer than this are one trigger (s)"
    )
    mask_dilation: tuple[int, int] = Field(
        (2, 2), description="(time bins, frequency rows) added around peaks for ratio/IoU"
    )
    window: float = Field(6.0, gt=0, description="window for the per-window ratio and IoU (s)")
    time_slides: int = Field(200, ge=10, description="number of time slides for the FAP")
    slide_step: float = Field(3.7, gt=1.0, description="slide offset unit (s), >> coupling delays")
    selection: Literal["significance", "seed"] = "significance"
    min_significance: float = Field(5.0, gt=0, description="-log10 Poisson probability")
    max_fap: float = Field(0.01, gt=0, le=1, description="time-slide false-alarm probability")
    seed_ratio: float = Field(0.17, ge=0, le=1)
    seed_iou: float = Field(0.08, ge=0, le=1)
    unsafe_channels: list[str] = Field(
        default_factory=lambda: ["V1:LSC_DARM_ERR"],
        description="strain-derived channels: scanned and reported, never selected",
    )
    channels: list[str] | None = Field(None, description="auxiliary channels; None = all")
    channels_per_task: int = Field(8, ge=1)
    frames_per_block: int = Field(4, ge=1)
    cpus_per_task: float = Field(1.0, gt=0)
    hveto: HvetoConfig = Field(
        HvetoConfig(),
        description="hveto rounds; its thresholds and windows are also the points over "
        "which each channel's significance is maximised (trials-corrected)",
    )


class ModelConfig(Strict):
    """Architecture by registry name and its arguments."""

    name: str = "unet_res_att"
    base: int = Field(16, ge=1, le=512, description="channels of the first level (width)")
    depth: int = Field(3, ge=1, le=8)
    residual: bool | None = Field(None, description="None: the architecture's own default")
    attention: bool | None = Field(None, description="None: the architecture's own default")


class LossConfig(Strict):
    kind: Literal["l1_ssim", "l1", "mse"] = "l1_ssim"
    l1_weight: float = Field(0.8, ge=0, le=1)
    ssim_weight: float = Field(0.2, ge=0, le=1)
    glitch_weight: float = Field(
        10.0,
        ge=1,
        description="weight of glitch pixels (target or prediction above train.glitch_threshold "
        "SNR^2) in the L1 / squared error; 1 = unweighted (the seed's)",
    )
    profile_weight: float = Field(
        0.0,
        ge=0,
        description="weight of an L1 term on the time profile (each time bin's maximum over "
        "frequency) of prediction and target: where a witness fixes when a glitch happens but "
        "not where its power falls in frequency (scattered-light fringes), the pixel losses "
        "predict the floor while the profile is still predictable; 0 = off",
    )
    weight_on: Literal["either", "target"] = Field(
        "either",
        description="which pixels glitch_weight marks: 'either' (target or prediction above the "
        "level: missed and invented glitches cost alike) or 'target' (only the target's: a pixel "
        "glitching in more than 1 / (1 + glitch_weight) of similar inputs is predicted hot)",
    )


class MlflowConfig(Strict):
    tracking_uri: str | None = Field(None, description="None: sqlite:///OUT/mlflow.db")
    experiment: str = "glitchflow"
    registered_model: str = "glitchflow-unet"
    alias: str = "candidate"


class VetoCalibrationConfig(Strict):
    """The learned veto's operating point, chosen after training on the validation split."""

    calibrate: bool = Field(
        True, description="choose the veto's SNR^2 threshold and cluster area on validation data"
    )
    target_deadtime: float = Field(
        0.01, gt=0, lt=1, description="fraction of glitch-free validation time the veto may remove"
    )
    guard: float = Field(
        0.5, ge=0, description="time (s) around a strain glitch that is not glitch-free time"
    )


class TrainConfig(Strict):
    """Training (seed: AdamW lr 1e-4, wd 1e-4, batch 10, 100 epochs, plateau 7 / 0.5, clip 5)."""

    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(10, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    shard_cache_mb: float = Field(
        2048.0,
        ge=0,
        description="each worker reads its dataset shard once and keeps it in memory when "
        "it fits in this many MiB (every epoch reshuffles it without Ray Data); 0 = "
        "stream every epoch",
    )
    plateau_patience: int = Field(7, ge=0)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    select_tolerance: float = Field(
        0.02,
        ge=0,
        description="the kept model is the latest epoch whose validation loss is within this "
        "fraction of the best (0: the best epoch; small validation splits cannot tell losses a "
        "percent apart, and later epochs have learned rarer families)",
    )
    crop: int = Field(64, ge=8, description="square crop size (bins and rows)")
    clamp: float = Field(1e4, gt=0, description="SNR^2 values are clamped to [0, clamp]")
    transform: Literal["log1p", "linear"] = Field(
        "log1p", description="compression of SNR^2 before normalisation (linear: the seed's)"
    )
    glitch_threshold: float = Field(6.0, gt=0, description="strain max SNR^2 of a 'glitch' crop")
    background_fraction: float = Field(
        0.5, ge=0, description="background crops kept per glitch crop"
    )
    augment_shifts: int = Field(
        2,
        ge=1,
        description="training glitch crops are also cut at crop/augment_shifts bin offsets "
        "(the same glitch at other positions); 1 = aligned crops only",
    )
    balance_witnesses: int = Field(
        4,
        ge=1,
        description="training glitch crops led by a rarely glitching witness (the auxiliary "
        "channel with the crop's loudest pixel) are used up to this many times, so that each "
        "witness leads about as many crops as the most frequent one; 1 = off",
    )
    split_block: float = Field(64.0, gt=0, description="GPS block length for the split (s)")
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    snr2_threshold: float = Field(16.0, gt=0, description="veto / denoise metric threshold")
    min_area: int = Field(2, ge=1, description="pixels of a cluster for the metrics")
    veto: VetoCalibrationConfig = VetoCalibrationConfig()
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    max_failures: int = Field(2, ge=0)
    checkpoints_to_keep: int = Field(2, ge=1)
    image_every: int = Field(5, ge=1, description="epochs between TensorBoard images")
    mlflow: MlflowConfig = MlflowConfig()


class InferConfig(Strict):
    """Batch inference on new frames (``glitchflow infer``)."""

    window: float = Field(6.0, gt=0, description="window duration (s), a multiple of time_step")
    stride: float = Field(
        6.0,
        gt=0,
        description="window start spacing (s); window - stride is the overlap (default "
        "= window: every bin decided once)",
    )
    snr2_threshold: float | None = Field(
        None, gt=0, description="veto/denoise threshold (SNR^2); None: the checkpoint's"
    )
    min_area: int | None = Field(None, ge=1, description="cluster pixels; None: the checkpoint's")
    veto_padding: float = Field(
        0.0,
        ge=0,
        description="seconds added on each side of a cluster's time extent (0: the cluster's "
        "own extent, already one Q-tile wide; the veto's calibration counts it as deadtime)",
    )
    tiling: Literal["window", "crops"] = Field(
        "window",
        description="window: the model runs once over each whole window (every bin predicted "
        "once); crops: training-size crops every crop_hop, stitched",
    )
    crop_hop: float = Field(
        0.5,
        gt=0,
        le=1,
        description="with tiling crops: crop hop / crop (0.5 = overlapping, 1 = side by side)",
    )
    gate_taper: float = Field(
        0.25, ge=0, description="inverse-Tukey taper (s) on each side of a gated segment"
    )
    state_channel: str = Field(
        "DQ_GLITCHFLOW_STATE",
        description="state channel of the gated frames (prefix added): 0 not analysed, "
        "1 analysed and clean, 3 vetoed",
    )
    state_channel_rate: float = Field(16.0, gt=0, description="state channel sample rate (Hz)")
    frames_per_block: int = Field(4, ge=1)
    resources: ResourcesConfig = ResourcesConfig(workers=1, cpus_per_worker=1.0)
    rows_per_file: int = Field(64, ge=1, description="most windows per Parquet file of a block")
    images: int = Field(6, ge=0, description="strongest glitch windows shown in TensorBoard")
    write_gated_frames: bool = True


class EvaluateConfig(Strict):
    """Scorecard against the twin's truth (``glitchflow evaluate``)."""

    strain_snr_threshold: float = Field(
        8.0, gt=0, description="optimal strain SNR above which a glitch counts for efficiency"
    )
    roc_thresholds: list[float] = Field(
        default_factory=lambda: [
            2.0,
            2.8,
            4.0,
            6.0,
            8.0,
            12.0,
            16.0,
            25.0,
            40.0,
            64.0,
            100.0,
            160.0,
        ],
        description="SNR^2 thresholds swept for the ROC (both methods)",
    )
    fixed_deadtimes: list[float] = Field(
        default_factory=lambda: [0.001, 0.005, 0.01],
        description="deadtimes (fractions) at which both methods' efficiency is read off the ROC",
    )
    accuracy_thresholds: tuple[float, float, int] = Field(
        (1.0, 50.0, 50), description="(first, last, count) SNR^2 thresholds of the seed's curves"
    )


class ServePsdConfig(Strict):
    """Which PSD the endpoint whitens with (see :mod:`glitchflow.serve.psd_keeper`)."""

    mode: Literal["request", "kept"] = Field(
        "request",
        description="request: each request's own Welch PSD (as infer: equal answers); kept: "
        "a per-channel median of recent requests' PSDs, remade on a schedule",
    )
    refresh_s: float = Field(60.0, gt=0, description="seconds between remakes of the kept PSD")
    depth: int = Field(64, ge=1, description="requests' PSDs kept per channel")
    sample_every: int = Field(
        16, ge=1, description="one request in this many contributes its own PSD"
    )
    min_requests: int = Field(4, ge=1, description="requests before the first kept PSD")


class ServeConfig(Strict):
    """The HTTP endpoint (``glitchflow serve``, ``serve run``, KubeRay RayService)."""

    host: str = Field("127.0.0.1", description="bind address; loopback unless opened on purpose")
    port: int = Field(8000, ge=1, le=65535)
    route_prefix: str = "/"
    window: float | None = Field(None, gt=0, description="decision window (s); None: the model's")
    snr2_threshold: float | None = Field(None, gt=0, description="None: the checkpoint's")
    min_area: int | None = Field(None, ge=1, description="None: the checkpoint's")
    max_batch_size: int = Field(8, ge=1, description="requests per model call (@serve.batch)")
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0,
        description="wait for a fuller batch (s); 0: a batch takes what queued while the "
        "previous one ran (a lone request does not wait)",
    )
    max_ongoing_requests: int = Field(32, ge=1, description="per replica; >= max_batch_size")
    num_replicas: int = Field(1, ge=1)
    autoscaling: bool = Field(False, description="autoscale between min and max replicas")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    cpus_per_replica: float = Field(1.0, gt=0)
    gpus_per_replica: float = Field(0.0, ge=0)
    threads: int = Field(1, ge=1, description="torch threads per replica")
    tiling: Literal["window", "crops"] = Field(
        "window",
        description="as infer.tiling; keep them equal (equal settings, equal answers)",
    )
    crop_hop: float = Field(0.5, gt=0, le=1, description="as infer.crop_hop; keep them equal")
    max_request_mb: float = Field(64.0, gt=0, description="larger payloads get 413")
    psd: ServePsdConfig = ServePsdConfig()
    token_env: str = Field(
        "GLITCHFLOW_SERVE_TOKEN", description="env var holding the bearer token; unset = no auth"
    )
    watch_interval_s: float = Field(
        0.0, ge=0, description="poll the registry alias for a new version (s); 0 = only on reload"
    )
    sync_interval_s: float = Field(
        0.5, gt=0, description="replicas follow a /v1/reload made on another replica (s)"
    )
    clean_model: str | None = Field(
        None,
        description="subtraction model (fit-clean's model.pt or models:/NAME@ALIAS): "
        "/v1/denoise then also subtracts witnessed glitches from strain",
    )


class RetrainConfig(Strict):
    """Periodic re-training with promotion (``glitchflow retrain``)."""

    buffer_hours: float = Field(24.0, gt=0, description="most recent data used (hours)")
    holdout_seconds: float = Field(
        3600.0, gt=0, description="newest seconds held out to score candidate vs production"
    )
    production_alias: str = "production"
    metric: Literal["log_l1", "veto_accuracy", "denoise_accuracy"] = Field(
        "log_l1", description="log_l1: mean |log1p(real) - log1p(generated)|, lower is better"
    )
    min_improvement: float = Field(0.0, ge=0, description="margin the candidate must beat")
    min_glitch_windows: int = Field(
        3, ge=0, description="held-out windows with a strain glitch needed to compare models"
    )


class OnlineConfig(Strict):
    """Following a live frame directory (``glitchflow online``).

    Windows lie on the same GPS grid as ``glitchflow infer`` and are conditioned
    one owning frame at a time, so ``online`` gives the decisions of ``infer``
    run with ``infer.frames_per_block=1`` and the same window and stride.
    """

    window: float = Field(
        3.0,
        gt=0,
        description="decision window (s), a multiple of the model's bin; shorter "
        "windows publish sooner (a frame waits for the end of its window plus the edge)",
    )
    stride: float = Field(3.0, gt=0, description="window start spacing (s), <= window")
    late_horizon: float = Field(
        8.0,
        ge=0,
        description="data seconds the stream may run past a missing frame before "
        "its time is published as not analysed; a frame arriving later is skipped",
    )
    poll_interval: float = Field(0.05, gt=0, description="directory poll period (s)")
    veto_padding: float = Field(0.0, ge=0, description="as infer.veto_padding (s)")
    tiling: Literal["window", "crops"] = Field(
        "window",
        description="as infer.tiling",
    )
    crop_hop: float = Field(0.5, gt=0, le=1, description="as infer.crop_hop")
    snr2_threshold: float | None = Field(None, gt=0, description="None: the checkpoint's")
    min_area: int | None = Field(None, ge=1, description="None: the checkpoint's")
    workers: int = Field(1, ge=1, description="analyser actors holding the warm model")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    max_in_flight: int = Field(4, ge=1, description="frames queued per analyser")
    model_poll: float = Field(
        10.0, ge=0, description="registry alias check period (s); 0 = never re-resolve"
    )
    flag_every: float = Field(60.0, gt=0, description="rewrite OUT/vetoes.h5 this often (s)")
    metrics_every: float = Field(10.0, gt=0, description="MLflow/TensorBoard metrics period (s)")
    status_host: str = Field("127.0.0.1", description="bind address of the status route")
    status_port: int = Field(0, ge=0, le=65535, description="0: any free port (see status.json)")
    state_channel: str = Field(
        "DQ_GLITCHFLOW_STATE", description="state channel of the output frames (prefix added)"
    )
    state_rate: float = Field(64.0, gt=0, description="state channel sample rate (Hz)")
    frame_tag: str = Field("GLITCHFLOW_ONLINE", pattern=r"^[A-Za-z0-9_]+$")

    @model_validator(mode="after")
    def _stride_within_window(self) -> OnlineConfig:
        if self.stride > self.window:
            raise ValueError(f"stride ({self.stride} s) exceeds window ({self.window} s)")
        return self
