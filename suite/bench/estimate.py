"""How long a bench plan takes, estimated before anything runs (``python -m suite bench --dry-run``).

Per stage invocation: the configurations it measures, counted by the stage's own planning (the
cost stage's jobs, :func:`suite.cost.cli.plan_jobs`; the latency and memory grids,
:func:`suite.timing.cli_common.plan_sweep`; the accuracy stage's runs, its types and the
baseline times its seeds), less those an earlier invocation of the same stage measured into the
same folder, times the seconds one of them takes on the device that runs it
(:class:`DeviceModel`). Counting touches no device: a plan for ``--device cuda`` is counted on a
machine without CUDA.

**CPU** (:data:`CPU`), calibrated on committed runs of the cpu profile: the
eager latency and accuracy figures on a 2-core AMD EPYC (``reports/cpu-amd``: the stage wall times in
``bench.json``, the per-record times of the raw records, and ``epoch_s`` of
``raw/accuracy/runs.csv``), which the reference run on a 2-core Intel Xeon (``reports/cpu``)
matched within 25% (its accuracy stage: 3,457 s and, in a second run, 3,933 s against 3,336 s
estimated); the cost stage's, the runtimes', the op profiles' and the memory stage's figures,
and the attention types' training cost, on that Intel Xeon:

* cost: 1 s to start, 0.033 s per module job, per model job the backbone's counting time
  (:data:`COST_MODEL_S`: resnet18 0.38 s, resnet50 0.92 s, mobilenet_v2 0.53 s, measured on the
  Intel Xeon);
* latency: 7 s per invocation (worker servers, the machine's peaks), 0.3 s per round (its fresh
  worker), and per configuration and round the sampling time (``budget-s / rounds``) plus the
  warm-up: 0.13 s for a module's forward, 0.2 s for its training step; a model's build (0.011 s
  per million parameters) and 3.5 calls of it (batch x MACs at 5.4e10 MAC/s on one thread, a
  training step 3 calls); compiled rows add, in the first round, 5 s (module forward, assumed:
  below a model's), 50 s (module training step, assumed), 9 s (model forward, measured: the cpu
  profile's inductor table of 21 models took 414 s with an empty inductor cache, 334 s with a
  warm one) and 240 s (model training step, assumed), and 0.5, 8, 5 and 40 s in later rounds
  (inductor's cache hit; the forward figures measured there); exported rows (onnxruntime,
  openvino) add 2 s (module) and 8 s (model: ResNet-50 exported in 7.1 s) in the first round,
  0.4 s (module) and 1.4 s (model: the session and its warm-up, measured) later, from the on-disk
  export cache. Compile and export figures are for empty caches, so a run that finds them warm
  takes less;
* ops: 5 s to start and per configuration 0.6 s plus, compiled or exported, the first round's
  cost above;
* memory: 1 s to start and 0.145 s per configuration (a fresh process each);
* accuracy: per epoch, training images x 3 x the backbone's MACs at the input size at 1.86e11
  MAC/s (bf16 autocast on a CPU with native bf16; fp32 a third of that), times the attention
  type's cost relative to the baseline's (:data:`ACCURACY_FACTOR`, from the Intel Xeon run: se
  1.15, gsop 1.45, 1.5 for a type not run there; a width-matched arm as its design); the final evaluation (forward only); 1 s per run.

**CUDA** (:data:`CUDA`, one H100-class GPU), *unverified until a GPU runs it*:

* compute: ResNet-50 v1.5 mixed-precision training at 2,470 img/s on one A100 80GB (NVIDIA
  DeepLearningExamples, ``PyTorch/Classification/ConvNets/resnet50v1.5/README.md``, "Training
  performance: NVIDIA DGX A100", 1 GPU), times 2 for an H100 SXM (vision models gain about 2x over
  the A100: Lambda's "NVIDIA H100 Tensor Core GPU - Deep Learning Performance Analysis"), times 0.6 for this
  suite's plain PyTorch loop: 2,960 img/s, 3.7e13 MAC/s of training; fp32 (TF32) 2.63x slower
  (that table's TF32 to mixed-precision ratio); a forward call of a model at the same MAC rate;
* latency: 15 s per invocation, 3 s per round (a fresh worker creates its CUDA context), per
  configuration and round the sampling time plus 0.3 s (module forward) or 0.5 s (training step)
  of warm-up with cuDNN's autotuning; a model's build as on the CPU plus 0.5 s; compiled
  configurations add the compile time (assumed, no published figure fits: 10 s for a module's
  forward, 25 s for its training step, 45 s and 120 s for a model, in the first round; 2, 4, 8 and
  20 s in the later rounds, whose fresh processes find inductor's on-disk caches warm);
* memory: 5 s to start, 6 s per configuration (a fresh interpreter that imports torch, creates
  its CUDA context, builds and steps twice: 5-8 s where a CUDA context takes 1-3 s to create);
* accuracy: as on the CPU at the rates above, 20 s per run (build, autotuning, evaluation) and
  60 s per invocation (decoding Imagenette at 256 px);
* the cost stage counts on the host's CPU: the CPU model.

The report takes 6 s (the committed run's), on either.

The printed total says which model each part used; the CUDA part is an estimate until a GPU has
run it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..shard import select_shard

__all__ = ["DeviceModel", "CPU", "CUDA", "Estimate", "estimate_runs", "report_estimate", "estimate_line", "total_line",
           "COST_MODEL_S", "ACCURACY_FACTOR", "MACS_224", "PARAMS_M"]

MACS_224 = {"resnet18": 1.823e9, "resnet34": 3.677e9, "resnet50": 4.127e9, "resnet101": 7.858e9,
            "mobilenet_v2": 3.205e8, "resnet_small": 2.219e9, "dsan": 6.986e8}
"""MACs of one 224 x 224 image through each backbone without attention (fvcore, the cost stage's
records); other sizes scale with the area. A backbone not listed counts as resnet50."""

PARAMS_M = {"resnet18": 11.69, "resnet34": 21.80, "resnet50": 25.56, "resnet101": 44.55,
            "mobilenet_v2": 3.50, "resnet_small": 1.46, "dsan": 0.64}
"""Millions of parameters of each backbone (the cost stage's records)."""

COST_MODEL_S = {"resnet18": 0.38, "resnet34": 0.72, "resnet50": 0.92, "resnet101": 1.9,
                "mobilenet_v2": 0.53, "resnet_small": 0.24, "dsan": 0.24}
"""Seconds to count one model job, per backbone: resnet18, resnet50 and mobilenet_v2 from the
Intel Xeon run's records (``reports/cpu``, 0.8x the AMD EPYC run's); the others from their ratio
to those on another 2-core machine."""

ACCURACY_FACTOR = {"none": 1.0, "se": 1.15, "eca": 1.12, "ca": 1.36, "cbam": 1.53, "dycaconv": 1.38,
                   "dsan_channel": 1.27, "gsop": 1.45}
"""An epoch of each type over the baseline's (median ``epoch_s`` of the committed cpu run,
``reports/cpu``, Intel Xeon); 1.5 for others. A width-matched arm costs its design's."""
OTHER_FACTOR = 1.5

OPS_START_S = 5.0
OPS_CONFIG_S = 0.6
"""The ops stage on the CPU: seconds to start, and per configuration besides compiling or exporting."""

REPORT_S = 6.0
"""Seconds to render the report (the committed cpu run's, 5.97 s)."""

IMAGENETTE = {"classes": 10, "train": 9469, "val": 3925}
"""The images of the default data set (Imagenette), which the accuracy estimate assumes."""


@dataclass(frozen=True)
class DeviceModel:
    """The seconds of one configuration of each stage on one kind of device (module docstring)."""

    name: str
    source: str
    verified: bool
    latency_invocation_s: float
    latency_round_s: float
    module_warmup_s: dict[str, float]
    model_build_s: float
    model_build_s_per_mparam: float
    model_calls: float
    forward_macs_per_s: float
    compile_first_s: dict[tuple[str, str], float]
    compile_later_s: dict[tuple[str, str], float]
    export_first_s: dict[str, float]
    export_later_s: dict[str, float]
    memory_start_s: float
    memory_config_s: float
    train_macs_per_s: float
    fp32_slowdown: float
    accuracy_run_s: float
    accuracy_start_s: float
    cost_start_s: float = 1.0
    cost_module_job_s: float = 0.033
    cost_model_job_s: dict[str, float] = field(default_factory=lambda: dict(COST_MODEL_S))


CPU = DeviceModel(
    name="cpu", verified=True,
    source="calibrated on the committed cpu runs (2-core Intel Xeon and AMD EPYC, reports/cpu*)",
    latency_invocation_s=7.0, latency_round_s=0.3, module_warmup_s={"forward": 0.13, "train": 0.2},
    model_build_s=0.0, model_build_s_per_mparam=0.011, model_calls=3.5, forward_macs_per_s=5.4e10,
    compile_first_s={("module", "forward"): 5.0, ("module", "train"): 50.0, ("model", "forward"): 9.0,
                     ("model", "train"): 240.0},
    compile_later_s={("module", "forward"): 0.5, ("module", "train"): 8.0, ("model", "forward"): 5.0,
                     ("model", "train"): 40.0},
    export_first_s={"module": 2.0, "model": 8.0}, export_later_s={"module": 0.4, "model": 1.4},
    memory_start_s=1.0, memory_config_s=0.145,
    train_macs_per_s=1.86e11, fp32_slowdown=3.0, accuracy_run_s=1.0, accuracy_start_s=0.0,
)

CUDA = DeviceModel(
    name="cuda", verified=False,
    source="a model of one H100-class GPU from published figures (see suite/bench/estimate.py), "
           "unverified until a GPU runs it",
    latency_invocation_s=15.0, latency_round_s=3.0, module_warmup_s={"forward": 0.3, "train": 0.5},
    model_build_s=0.5, model_build_s_per_mparam=0.011, model_calls=3.5, forward_macs_per_s=3.67e13,
    compile_first_s={("module", "forward"): 10.0, ("module", "train"): 25.0, ("model", "forward"): 45.0,
                     ("model", "train"): 120.0},
    compile_later_s={("module", "forward"): 2.0, ("module", "train"): 4.0, ("model", "forward"): 8.0,
                     ("model", "train"): 20.0},
    export_first_s={"module": 2.0, "model": 8.0}, export_later_s={"module": 0.4, "model": 0.4},
    memory_start_s=5.0, memory_config_s=6.0,
    train_macs_per_s=3.67e13, fp32_slowdown=2.63, accuracy_run_s=20.0, accuracy_start_s=60.0,
)

MODELS = {"cpu": CPU, "cuda": CUDA}


@dataclass(frozen=True)
class Estimate:
    """One stage invocation's estimate: what it measures (``count`` of ``unit``), on which model."""

    stage: str
    index: int
    model: str
    count: int
    unit: str
    seconds: float
    note: str = ""

    @property
    def minutes(self) -> float:
        return self.seconds / 60.0


def estimate_runs(runs: Sequence[Any], *, native_bf16: bool | None = None) -> list[Estimate]:
    """The estimate of each stage invocation of ``runs`` (:class:`suite.bench.runner.StageRun`).
    ``native_bf16``: whether this CPU runs bf16 natively (the accuracy stage's autocast on the
    CPU); None asks this machine."""
    seen: dict[str, set[str]] = {}
    result = []
    for run in runs:
        done = seen.setdefault(run.stage, set())
        estimator = _ESTIMATORS.get(run.stage)
        try:
            if estimator is None:
                raise LookupError("no model for this stage")
            result.append(estimator(run, done, native_bf16))
        except (ImportError, LookupError) as exc:  # a stage that cannot be planned here is not counted
            result.append(Estimate(run.stage, run.index, "", 0, "configurations", 0.0, note=f"not estimated: {exc}"))
    return result


def report_estimate() -> Estimate:
    """The report's estimate (:data:`REPORT_S`, rendered on the CPU)."""
    return Estimate("report", 0, CPU.name, 1, "report", REPORT_S)


def estimate_line(estimate: Estimate) -> str:
    """``# N configurations, estimated M min (model)``: a comment under the invocation's command."""
    if estimate.note:
        return f"  # {estimate.note}"
    return (f"  # {estimate.count} {estimate.unit}, estimated {_minutes(estimate.seconds)} "
            f"({estimate.model} model)")


def total_line(estimates: Sequence[Estimate]) -> str:
    """The plan's estimated total, with the models it used and whether they are verified."""
    total = sum(e.seconds for e in estimates)
    parts = []
    for name in dict.fromkeys(e.model for e in estimates if e.model):
        seconds = sum(e.seconds for e in estimates if e.model == name)
        parts.append(f"{_minutes(seconds)} on {name}: {MODELS[name].source}")
    detail = "; ".join(parts) if parts else "nothing to run"
    return f"estimated total: {_minutes(total)} ({detail})"


def _minutes(seconds: float) -> str:
    minutes = seconds / 60.0
    if minutes >= 120:
        return f"{minutes:.0f} minutes (about {minutes / 60:.1f} hours)"
    return f"{minutes:.1f} minutes" if minutes < 10 else f"{minutes:.0f} minutes"


def _new(keys: Sequence[str], done: set[str]) -> list[str]:
    """The keys not measured by an earlier invocation of the stage (which are skipped), noted as seen."""
    fresh = [k for k in dict.fromkeys(keys) if k not in done]
    done.update(fresh)
    return fresh


# --- cost ---------------------------------------------------------------------------------------

def _cost(run: Any, done: set[str], native_bf16: bool | None) -> Estimate:
    from ..cost.cli import plan_jobs

    jobs = {job.key(): job for job in plan_jobs(run.settings)}
    fresh = [jobs[k] for k in _new(list(jobs), done)]
    model = CPU
    seconds = model.cost_start_s + sum(
        model.cost_module_job_s if job.level == "module"
        else model.cost_model_job_s.get(job.arch, model.cost_model_job_s["resnet50"]) for job in fresh)
    return Estimate("cost", run.index, model.name, len(fresh), "configurations", seconds)


# --- latency and memory ---------------------------------------------------------------------------

def _grid(settings: Any, stage: str) -> list[Any]:
    """The stage's configurations (its part ``--shard``), planned as the stage plans them but on
    the CPU, so that a CUDA plan is counted where there is no CUDA (the device only names them)."""
    from ..timing.cli_common import plan_sweep

    device = settings.device or "cpu"
    changes: dict[str, Any] = {"device": "cpu", "preset": settings.preset or ("gpu" if device.startswith("cuda") else "cpu")}
    shard = getattr(settings, "shard", None)
    if shard is not None:
        changes["shard"] = None
    plan = plan_sweep(dataclasses.replace(settings, **changes), stage, cpu_threads=1)
    return select_shard(plan.configs, shard)


def _device_model(device: str | None) -> DeviceModel:
    return CUDA if (device or "cpu").startswith("cuda") else CPU


def _call_s(config: Any, model: DeviceModel) -> float:
    """One call of a model-level configuration: its MACs at the device's rate."""
    macs = MACS_224.get(config.arch, MACS_224["resnet50"]) * (config.size / 224) ** 2 * config.batch
    rate = model.forward_macs_per_s / (model.fp32_slowdown if config.dtype == "fp32" and model is CUDA else 1.0)
    return macs * (3.0 if config.mode == "train" else 1.0) / rate


def _config_round_s(config: Any, model: DeviceModel, sample_s: float, first: bool) -> float:
    """One configuration in one round: sampling, warm-up and build, and compiling when compiled."""
    if config.level == "model":
        call = _call_s(config, model)
        params = PARAMS_M.get(config.arch, PARAMS_M["resnet50"])
        seconds = (max(sample_s, 2 * call) + model.model_build_s + model.model_build_s_per_mparam * params
                   + model.model_calls * call)
    else:
        seconds = sample_s + model.module_warmup_s[config.mode]
    return seconds + _runtime_s(config, model, first)


def _runtime_s(config: Any, model: DeviceModel, first: bool) -> float:
    """What compiling or exporting adds to one configuration's round (nothing in eager)."""
    if config.compile == "compile":
        table = model.compile_first_s if first else model.compile_later_s
        return table[(config.level, config.mode)]
    if config.compile in ("onnxruntime", "openvino"):
        return (model.export_first_s if first else model.export_later_s)[config.level]
    return 0.0


def _ops(run: Any, done: set[str], native_bf16: bool | None) -> Estimate:
    from ..ops.cli import plan_ops

    plan, _ = plan_ops(run.settings)
    configs = {c.key(): c for c in plan.configs}
    fresh = [configs[k] for k in _new(list(configs), done)]
    model = CPU
    seconds = (OPS_START_S + sum(OPS_CONFIG_S + _runtime_s(c, model, True) for c in fresh)) if fresh else 0.0
    return Estimate("ops", run.index, model.name, len(fresh), "configurations", seconds)


def _latency(run: Any, done: set[str], native_bf16: bool | None) -> Estimate:
    from ..timing.cli_latency import BUDGET_DEFAULT_S, round_plan

    settings = run.settings
    configs = {c.key(): c for c in _grid(settings, "latency")}
    fresh = [configs[k] for k in _new(list(configs), done)]
    model = _device_model(settings.device)
    rounds = round_plan(settings, "cuda" if model is CUDA else "cpu").rounds
    budget = settings.budget_s if settings.budget_s is not None else BUDGET_DEFAULT_S[model.name]
    per_config = sum(_config_round_s(c, model, budget / rounds, True)
                     + (rounds - 1) * _config_round_s(c, model, budget / rounds, False) for c in fresh)
    seconds = (model.latency_invocation_s + rounds * model.latency_round_s + per_config) if fresh else 0.0
    return Estimate("latency", run.index, model.name, len(fresh), "configurations", seconds)


def _memory(run: Any, done: set[str], native_bf16: bool | None) -> Estimate:
    settings = run.settings
    configs = {c.key(): c for c in _grid(settings, "memory")}
    fresh = _new(list(configs), done)
    model = _device_model(settings.device)
    seconds = (model.memory_start_s + model.memory_config_s * len(fresh)) if fresh else 0.0
    return Estimate("memory", run.index, model.name, len(fresh), "configurations", seconds)


# --- accuracy -------------------------------------------------------------------------------------

def _accuracy_model(settings: Any) -> DeviceModel:
    """The device the accuracy stage trains on: ``--device``, else CUDA for the gpu preset."""
    if settings.device in ("cpu", "cuda"):
        return MODELS[settings.device]
    return CUDA if settings.preset == "gpu" else CPU


def _images(recipe: Any) -> tuple[float, float]:
    """Training and validation images of the recipe on Imagenette."""
    classes = len(recipe.classes) if recipe.classes else (recipe.num_classes or IMAGENETTE["classes"])
    classes = min(classes, IMAGENETTE["classes"])
    train = IMAGENETTE["train"] / IMAGENETTE["classes"]
    val = IMAGENETTE["val"] / IMAGENETTE["classes"]
    if recipe.train_per_class:
        train = min(train, recipe.train_per_class)
    if recipe.val_per_class:
        val = min(val, recipe.val_per_class)
    return classes * train, classes * val


def run_seconds(recipe: Any, attn: str, model: DeviceModel, native_bf16: bool) -> float:
    """One training run of ``attn`` under ``recipe``: its epochs, the final evaluation, the run's start."""
    macs = MACS_224.get(recipe.arch, MACS_224["resnet50"]) * (recipe.image_size / 224) ** 2
    amp = recipe.amp and (model is CUDA or native_bf16)
    rate = model.train_macs_per_s / (1.0 if amp else model.fp32_slowdown)
    train, val = _images(recipe)
    factor = ACCURACY_FACTOR.get(attn.removeprefix("matched_"), OTHER_FACTOR)  # an arm costs its design's step
    return (recipe.epochs * 3 * train + val) * macs / rate * factor + model.accuracy_run_s


def _accuracy(run: Any, done: set[str], native_bf16: bool | None) -> Estimate:
    import modules

    from ..accuracy.cli import recipe_of, resolve_attention
    from ..accuracy.recipe import DEFAULT_SEEDS

    settings = run.settings
    recipe = recipe_of(settings)
    seeds = settings.seeds or DEFAULT_SEEDS[settings.preset]
    names = [modules.BASELINE, *resolve_attention(settings.attn)]
    arms = [f"matched_{design}" for design in getattr(settings, "matched", ()) or ()]
    planned = [(attn, settings.first_seed + s) for s in range(seeds) for attn in [*names, *arms]]
    runs = select_shard(planned, getattr(settings, "shard", None))
    keys = {f"{attn}|{seed}|{recipe.fingerprint()}": attn for attn, seed in runs}
    fresh = _new(list(keys), done)
    model = _accuracy_model(settings)
    if native_bf16 is None:
        native_bf16 = _native_bf16()
    seconds = sum(run_seconds(recipe, keys[k], model, native_bf16) for k in fresh)
    seconds += model.accuracy_start_s if fresh else 0.0
    return Estimate("accuracy", run.index, model.name, len(fresh), "runs", seconds)


def _native_bf16() -> bool:
    from ..accuracy.train import cpu_has_native_bf16

    return cpu_has_native_bf16()


_ESTIMATORS = {"cost": _cost, "latency": _latency, "memory": _memory, "ops": _ops, "accuracy": _accuracy}
