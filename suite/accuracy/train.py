"""One training run per (attention type, seed), resumable, paired, single-process or DDP.

Pairing. At seed ``s`` every attention type starts from the same weights in the layers it
shares with the baseline: the baseline network is built under ``torch.manual_seed(s)`` and its
state is copied into the attention network wherever a parameter or buffer has the same name
and shape (:func:`load_shared`); only the attention's own parameters differ. The data order
and every training crop come from a generator seeded by ``(s, epoch)`` alone, so all attention
types see the same images in the same order with the same crops.

Distribution. Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
``DistributedDataParallel`` (gloo on the CPU, NCCL on CUDA). Each global batch is drawn as in
a single process and split into equal contiguous parts, one per rank, with the crops drawn for
the whole global batch, so a run with R ranks computes the same gradient as one process up to
batch-norm statistics (per rank, not synchronised) and float summation order. The evaluation
is split across ranks and its counts are summed. Rank 0 writes checkpoints and results.

Checkpoints. After each epoch rank 0 writes the model, optimizer, scheduler and RNG states,
the epochs done and the time spent, atomically (temporary file + rename). A run that finds a
checkpoint of the same run (same key) continues after its last finished epoch; since the data
order and crops depend only on ``(seed, epoch)``, the resumed run ends with the same result as
an uninterrupted one (bitwise on the CPU with the same thread count).

Divergence. A step loss that is NaN, infinite or above ``diverge_factor * ln(classes)`` ends
the run with status ``diverged``; the sweep goes on with the next run.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from modules import BASELINE

from .augment import apply_affine, center_crop, sample_rrc, sample_translate, to_float
from .data import SplitData
from .recipe import Recipe

__all__ = [
    "DistInfo",
    "RunResult",
    "init_distributed",
    "close_distributed",
    "build_network",
    "load_shared",
    "paired_model",
    "Schedule",
    "plan_schedule",
    "TrainingState",
    "fresh_state",
    "restore",
    "save_checkpoint",
    "EpochOutcome",
    "train_epoch",
    "train_run",
    "evaluate",
    "amp_active",
    "broadcast_object",
    "cpu_has_native_bf16",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto", timeout: timedelta | None = None) -> DistInfo:
    """Join the ``torchrun`` job described by the environment, or return a single process.

    ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available). ``timeout``: how long
    any collective of the job waits for the other ranks before it fails, the barrier where they
    wait while the first rank decodes the data included (None: torch's default, 10 minutes
    for NCCL).
    """
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timeout)
    return DistInfo(rank, world, local, dev)


def close_distributed(finished: bool) -> None:
    """Leave the job joined by :func:`init_distributed` (nothing to do in a single process).

    ``finished``: this rank ended its work normally. Then the ranks first meet at a barrier, so
    that none tears its connections down while another may still be using them (a gloo rank
    that leaves while its peer still sends can abort with "terminate called without an active
    exception"). After an error the other
    ranks may never reach that barrier, so the group is destroyed without it; ``torchrun``
    stops the remaining ranks when one fails.
    """
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def build_network(arch: str, attn: str | None, num_classes: int) -> nn.Module:
    """The backbone ``arch`` with ``attn`` inserted (``None``: the baseline). An ``attn`` that
    names a width-matched arm with its widths (:func:`suite.accuracy.matched.network_spec`,
    ``matched_se@40-80-160-320``) is the backbone without attention at those widths."""
    import modules

    from .matched import build_matched, parse_network_spec

    if attn is not None and parse_network_spec(attn) is not None:
        return build_matched(arch, attn, num_classes)
    return modules.build_model(arch, attn, num_classes=num_classes)


def _unwrapped_names(name: str) -> list[str]:
    """``name`` with one numeric path component removed (a layer wrapped as ``Sequential(layer,
    attention)`` is ``layer.0`` in the attention network)."""
    parts = name.split(".")
    return [".".join(parts[:i] + parts[i + 1:]) for i in range(len(parts) - 1) if parts[i].isdigit()]


def load_shared(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Copy into ``model`` the entries of ``state`` (a baseline's) that it shares: same name
    and shape, or, for a layer the attention network wraps together with its attention, the
    same name once the wrapper's index is removed (used only when exactly one entry of
    ``state`` fits). Returns ``(copied, total in state)``."""
    own = model.state_dict()
    shared: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, tensor in own.items():
        if name in state and state[name].shape == tensor.shape:
            shared[name] = state[name]
            used.add(name)
    for name, tensor in own.items():
        if name in shared:
            continue
        fits = [c for c in _unwrapped_names(name) if c in state and c not in used and state[c].shape == tensor.shape]
        if len(fits) == 1:
            shared[name] = state[fits[0]]
            used.add(fits[0])
    model.load_state_dict(shared, strict=False)
    return len(used), len(state)


def paired_model(arch: str, attn: str | None, num_classes: int, seed: int) -> tuple[nn.Module, int]:
    """The network for ``(attn, seed)`` initialised as the baseline at ``seed`` wherever the
    two share a parameter; returns the model and the number of shared entries copied."""
    torch.manual_seed(seed)
    baseline = build_network(arch, None, num_classes)
    if attn is None or attn == BASELINE:
        return baseline, len(baseline.state_dict())
    torch.manual_seed(seed)
    model = build_network(arch, attn, num_classes)
    copied, _ = load_shared(model, baseline.state_dict())
    return model, copied


def gate_scale_at_init(attn: str, arch: str = "resnet_small", num_classes: int = 10, size: int = 32,
                       seed: int = 0) -> float:
    """How much the inserted ``attn`` scales what passes through it in ``arch`` at initialisation:
    the mean over its insertions of RMS(out) / RMS(in), measured on the modules as the network
    holds them (with whatever ``build_model`` removed or changed, e.g. DyCAConv without its own
    BN and SiLU), on the activations standard-normal images of ``size`` px give them in eval
    mode. A module whose output differs in shape from its input (a conv-kind design, which
    replaces a conv) is compared with the baseline's module at the same place on the same
    input, with the baseline initialised as in :func:`paired_model`. A sigmoid gate near 0.5
    halves its branch. NaN when ``attn`` inserts no module of its own."""
    from modules._base import AttentionModule

    network, _ = paired_model(arch, attn, num_classes, seed)
    baseline, _ = paired_model(arch, None, num_classes, seed)
    baseline_modules = dict(baseline.named_modules())
    ratios: list[float] = []

    def measure(name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0]
            reference = x if output.shape == x.shape else baseline_modules[name](x)
            ratios.append(float(output.pow(2).mean().sqrt() / reference.pow(2).mean().sqrt()))
        return hook

    inserted = [name for name, m in network.named_modules() if isinstance(m, AttentionModule)]
    outermost = [n for n in inserted if not any(n.startswith(f"{other}.") for other in inserted)]  # CBAM, not its halves
    handles = [network.get_submodule(name).register_forward_hook(measure(name)) for name in outermost]
    torch.manual_seed(seed)
    with torch.no_grad():
        baseline.eval()
        network.eval()(torch.randn(8, 3, size, size))
    for handle in handles:
        handle.remove()
    return sum(ratios) / len(ratios) if ratios else math.nan


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's data order and crops, seeded by ``(seed, epoch)`` alone."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor per step: a linear warm-up over ``warmup_steps``, then a cosine
    decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _exempt_from_decay(model: nn.Module) -> set[int]:
    """Ids of the parameters some module of ``model`` declares exempt (``no_weight_decay()``)."""
    exempt: set[int] = set()
    for module in model.modules():
        declared = getattr(module, "no_weight_decay", None)
        if not callable(declared):
            continue
        own = dict(module.named_parameters(recurse=False))
        for name in declared():
            if name not in own:
                raise ValueError(
                    f"{type(module).__name__}.no_weight_decay() names {name!r}, which is not one of "
                    f"its own parameters ({', '.join(sorted(own)) or 'none'})"
                )
            exempt.add(id(own[name]))
    return exempt


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay conv and linear weights (ndim > 1) except what a module declares exempt; BN
    parameters and biases (ndim <= 1) are never decayed."""
    exempt = _exempt_from_decay(model)
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 and id(param) not in exempt else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), numpy and Python, as a checkpoint keeps them."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Set the global RNG states :func:`_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then renamed onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=info.device if info.device.type == "cuda" else None)
    return box[0]


def _all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """``values`` summed over the ranks (themselves in a single process)."""
    if not info.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products natively (AVX512-BF16 or AMX-BF16, read
    from /proc/cpuinfo; False where that file does not exist). Without them bf16 is emulated
    and slower than fp32, so CPU autocast is only used with them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_active(recipe: Recipe, device: torch.device) -> bool:
    """Whether runs of ``recipe`` on ``device`` use bf16 autocast: ``recipe.amp`` on CUDA, or on
    a CPU with native bf16 (:func:`cpu_has_native_bf16`)."""
    return recipe.amp and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()))


def _autocast(recipe: Recipe, device: torch.device) -> torch.autocast:
    """bf16 autocast on ``device`` where :func:`amp_active`, else a disabled one."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp_active(recipe, device))


@torch.no_grad()
def evaluate(model: nn.Module, data: SplitData, recipe: Recipe, info: DistInfo) -> dict[str, Any]:
    """Top-1, top-5 (fractions) and mean cross-entropy on ``data`` (centre crop), over all ranks,
    and per image (in ``data``'s order) whether top-1 was right and its loss.

    Evaluation runs in fp32 whatever the training precision: bf16 logits tie on a few images per
    run, which would make top-1 depend on the tie-break."""
    was_training = model.training
    model.eval()
    indices = torch.arange(info.rank, len(data), info.world_size)
    k = min(5, len(data.classes))
    hits1, hits5, losses = [], [], []
    with torch.no_grad():
        for start in range(0, len(indices), recipe.eval_batch_size):
            idx = indices[start:start + recipe.eval_batch_size]
            images = center_crop(data.images[idx], recipe.image_size)
            x = to_float(images, info.device, recipe.channels_last)
            y = data.labels[idx].to(info.device)
            logits = model(x).float()
            losses.append(nn.functional.cross_entropy(logits, y, reduction="none").cpu())
            hits = logits.topk(k, dim=1).indices.eq(y[:, None])
            hits1.append(hits[:, 0].cpu())
            hits5.append(hits.any(dim=1).cpu())
    mine = {"index": indices.tolist(), "correct": torch.cat(hits1).tolist() if hits1 else [],
            "top5": torch.cat(hits5).tolist() if hits5 else [], "loss": torch.cat(losses).tolist() if losses else []}
    per_image = _gather_per_image(mine, len(data), info)
    model.train(was_training)
    count = len(data)
    return {"top1": sum(per_image["correct"]) / count, "top5": sum(per_image["top5"]) / count,
            "val_loss": sum(per_image["loss"]) / count, "per_image": per_image}


def _gather_per_image(mine: dict[str, list], total: int, info: DistInfo) -> dict[str, list]:
    """Every rank's per-image results, put back into the split's order."""
    parts = [mine]
    if info.distributed:
        parts = [None] * info.world_size
        dist.all_gather_object(parts, mine)
    merged: dict[str, list] = {"correct": [False] * total, "top5": [False] * total, "loss": [math.nan] * total}
    for part in parts:
        for column in merged:
            for i, value in zip(part["index"], part[column], strict=True):
                merged[column][i] = value
    return merged


@dataclass
class RunResult:
    """What one run produced (``status``: ``ok`` or ``diverged``)."""

    status: str
    top1: float
    top5: float
    val_loss: float
    train_loss: float
    epochs: int
    wall_s: float
    epoch_s: float
    params: int
    shared_entries: int
    resumed_from: int
    bf16: bool = False
    per_image: dict[str, list] | None = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Its fields by name (the fields of the run's record)."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Schedule:
    """The step counts of a run, from its recipe, its training set and the ranks.

    Attributes:
        steps_per_epoch: global batches per epoch (the images of an incomplete last batch are
            left out).
        total_steps: optimizer steps of the whole run.
        warmup_steps: steps of the linear warm-up (at least one).
        per_rank: images of each global batch one rank computes.
        diverge_at: the step loss that ends the run as ``diverged``.
    """

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    per_rank: int
    diverge_at: float


def plan_schedule(recipe: Recipe, train_images: int, num_classes: int, world_size: int) -> Schedule:
    """The :class:`Schedule` of ``recipe`` on ``train_images`` images of ``num_classes`` classes
    over ``world_size`` ranks; a batch the ranks cannot split evenly, or larger than the training
    set, is a ValueError."""
    per_rank, remainder = divmod(recipe.batch_size, world_size)
    if remainder:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by the {world_size} ranks")
    steps_per_epoch = train_images // recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {recipe.batch_size} is larger than the training set ({train_images} images)")
    return Schedule(
        steps_per_epoch=steps_per_epoch,
        total_steps=steps_per_epoch * recipe.epochs,
        warmup_steps=max(1, round(recipe.warmup_epochs * steps_per_epoch)),
        per_rank=per_rank,
        diverge_at=recipe.diverge_factor * math.log(max(2, num_classes)),
    )


@dataclass
class TrainingState:
    """Everything a checkpoint holds: the model (unwrapped from DDP), optimizer and scheduler,
    the epochs done with the mean step loss of each, and the seconds spent."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    epochs_done: int = 0
    elapsed: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)


def fresh_state(model: nn.Module, recipe: Recipe, schedule: Schedule) -> TrainingState:
    """A run's state before its first step: SGD with Nesterov momentum on ``model``'s decay
    groups (:func:`_param_groups`), a per-step warm-up then cosine schedule."""
    optimizer = torch.optim.SGD(
        _param_groups(model, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum, nesterov=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(schedule.warmup_steps, schedule.total_steps))
    return TrainingState(model, optimizer, scheduler)


def restore(state: TrainingState, checkpoint: Path | None, run_key: str, info: DistInfo) -> int:
    """Continue ``state`` from ``checkpoint`` when it holds the run ``run_key``: rank 0 reads it
    and every rank loads its model, optimizer, scheduler and RNG states, epochs done, losses and
    time. Returns the epochs it held (0: a fresh start, also without a checkpoint of this run)."""
    saved = None
    if checkpoint is not None and info.is_main and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved.get("key") != run_key:
            saved = None
    saved = broadcast_object(saved, info)
    if saved is None:
        return 0
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(saved["rng"])
    state.epochs_done, state.elapsed, state.epoch_losses = saved["epoch"], saved["elapsed"], list(saved["epoch_losses"])
    return state.epochs_done


def save_checkpoint(state: TrainingState, checkpoint: Path, run_key: str) -> None:
    """Write ``state`` with the RNG states and ``run_key`` to ``checkpoint`` atomically (what
    :func:`restore` reads)."""
    _save_atomic(
        {
            "key": run_key,
            "epoch": state.epochs_done,
            "elapsed": state.elapsed,
            "epoch_losses": state.epoch_losses,
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "rng": _rng_state(),
        },
        checkpoint,
    )


@dataclass(frozen=True)
class EpochOutcome:
    """One epoch's mean step loss, or why it stopped early (``diverged``: a step loss past the
    divergence limit, empty when the epoch finished)."""

    mean_loss: float
    diverged: str = ""


def train_epoch(
    net: nn.Module,
    state: TrainingState,
    epoch: int,
    seed: int,
    recipe: Recipe,
    train: SplitData,
    schedule: Schedule,
    info: DistInfo,
    *,
    on_step: Callable[[int], None] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> EpochOutcome:
    """Train ``net`` (``state.model``, DDP-wrapped under torchrun) for ``epoch``: the order and
    crops of the global batches come from a generator seeded by ``(seed, epoch)`` alone; each
    rank computes its contiguous part of every batch. Stops at the first step loss that is not
    finite or above ``schedule.diverge_at``. ``on_step`` and ``progress``: as in
    :func:`train_run`."""
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    generator = _epoch_generator(seed, epoch)
    order = torch.randperm(len(train), generator=generator)
    lo, hi = info.rank * schedule.per_rank, (info.rank + 1) * schedule.per_rank
    loss_sum = 0.0
    for step in range(schedule.steps_per_epoch):
        batch = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
        theta = _sample_crops(recipe, len(batch), generator, train.images.shape[1])
        x, y = _rank_part(train, batch, theta, lo, hi, recipe, info.device)
        step_loss = _optimizer_step(net, state, criterion, x, y, recipe, info)
        if not math.isfinite(step_loss) or step_loss > schedule.diverge_at:
            return EpochOutcome(math.nan, f"step loss {step_loss:.4g} at epoch {epoch} step {step} "
                                          f"(limit {schedule.diverge_at:.3g})")
        loss_sum += step_loss
        if progress is not None:
            progress(1, step_loss)
        if on_step is not None:
            on_step(epoch * schedule.steps_per_epoch + step + 1)
    return EpochOutcome(loss_sum / schedule.steps_per_epoch)


def _rank_part(train: SplitData, batch: torch.Tensor, theta: torch.Tensor | None, lo: int, hi: int,
               recipe: Recipe, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's images ``[lo:hi]`` of a global ``batch`` (indices into ``train``), cropped by
    their part of ``theta`` (None: a centre crop), and their labels, on ``device``."""
    mine = batch[lo:hi]
    if theta is None:
        x = to_float(center_crop(train.images[mine], recipe.image_size), device, recipe.channels_last)
    else:
        x = apply_affine(to_float(train.images[mine], device), theta[lo:hi], recipe.image_size)
    return x, train.labels[mine].to(device, non_blocking=True)


def _optimizer_step(net: nn.Module, state: TrainingState, criterion: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    recipe: Recipe, info: DistInfo) -> float:
    """One optimizer and scheduler step on ``(x, y)``; returns the step loss averaged over the
    ranks."""
    with _autocast(recipe, info.device):
        loss = criterion(net(x), y)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    return _all_reduce_sum([loss.item()], info)[0] / info.world_size


def _final_metrics(model: nn.Module, val: SplitData, recipe: Recipe, info: DistInfo, status: str
                   ) -> tuple[dict[str, Any], float]:
    """The evaluation of a run that ended ``ok`` (NaN scores otherwise) and the seconds it took,
    after every rank takes rank 0's batch-norm statistics."""
    if info.distributed:  # each rank updated its own BN statistics since the last broadcast
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    if status != "ok":
        return {"top1": math.nan, "top5": math.nan, "val_loss": math.nan, "per_image": None}, 0.0
    started = time.perf_counter()
    metrics = evaluate(model, val, recipe, info)
    return metrics, time.perf_counter() - started


def _wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """``model`` in DistributedDataParallel under torchrun, else itself."""
    if not info.distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)


def train_run(
    arch: str,
    attn: str | None,
    seed: int,
    recipe: Recipe,
    train: SplitData,
    val: SplitData,
    info: DistInfo,
    *,
    checkpoint: Path | None = None,
    run_key: str = "",
    on_step: Callable[[int], None] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> RunResult:
    """Train and evaluate one ``(attn, seed)`` run with ``recipe``: build the paired network,
    :func:`restore` a checkpoint of this run, then :func:`train_epoch` and
    :func:`save_checkpoint` for each epoch left, and evaluate.

    Args:
        arch / attn / seed: the network and seed (``attn`` None or ``"none"``: the baseline).
        recipe: the training recipe.
        train / val: decoded splits.
        info: the process's place in the job (:func:`init_distributed`).
        checkpoint: the file to checkpoint to each epoch and resume from (None: no checkpoints).
        run_key: stored in the checkpoint; a checkpoint with another key is ignored.
        on_step: called with the global step number after each optimizer step (a test hook).
        progress: called with ``(steps done, step loss)`` after each step, and once with the
            steps a resumed checkpoint already holds (loss NaN).
    """
    num_classes = len(train.classes)
    schedule = plan_schedule(recipe, len(train), num_classes, info.world_size)
    model, shared = paired_model(arch, attn, num_classes, seed)
    model = model.to(info.device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    state = fresh_state(model, recipe, schedule)
    resumed_from = restore(state, checkpoint, run_key, info)
    if progress is not None and resumed_from:
        progress(resumed_from * schedule.steps_per_epoch, math.nan)  # the steps the checkpoint holds
    net = _wrap(model, info)
    net.train()
    status, message = "ok", ""
    for epoch in range(resumed_from, recipe.epochs):
        started = time.perf_counter()
        outcome = train_epoch(net, state, epoch, seed, recipe, train, schedule, info, on_step=on_step,
                              progress=progress)
        state.elapsed += time.perf_counter() - started
        if outcome.diverged:
            status, message = "diverged", outcome.diverged
            break
        state.epoch_losses.append(outcome.mean_loss)
        state.epochs_done = epoch + 1
        if checkpoint is not None and info.is_main:
            save_checkpoint(state, checkpoint, run_key)
        if info.distributed:
            dist.barrier()
    metrics, eval_seconds = _final_metrics(model, val, recipe, info, status)
    state.elapsed += eval_seconds
    epochs_done = len(state.epoch_losses)
    return RunResult(
        status=status,
        top1=metrics["top1"],
        top5=metrics["top5"],
        val_loss=metrics["val_loss"],
        per_image=metrics["per_image"],
        train_loss=state.epoch_losses[-1] if state.epoch_losses else math.nan,
        epochs=epochs_done,
        wall_s=state.elapsed,
        epoch_s=state.elapsed / max(1, epochs_done),
        params=sum(p.numel() for p in model.parameters()),
        shared_entries=shared,
        resumed_from=resumed_from,
        bf16=amp_active(recipe, info.device),
        message=message,
    )


def _sample_crops(recipe: Recipe, n: int, generator: torch.Generator, cached: int) -> torch.Tensor | None:
    """The crop (and flip) transforms of ``n`` images for ``recipe.augment`` from ``generator``
    (None: ``none``, a centre crop)."""
    if recipe.augment == "rrc":
        return sample_rrc(n, generator, scale=recipe.rrc_scale)
    if recipe.augment == "crop":
        return sample_translate(n, generator, cached, pad=recipe.crop_pad)
    return None
