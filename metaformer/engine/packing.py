"""Packed seeds: K copies of one model (the seeds of one configuration) trained as one batched model with
`torch.func.stack_module_state` + `vmap` (PyTorch's model-ensembling path), so a small model fills a device.

`PackedStepper` is the training side: it stacks K ordinary models (each seed's own, built and initialised exactly
as its unpacked run builds it) into one set of (K, ...) parameters, with one optimizer over them whose param groups
are the unpacked optimizer's (so no weight decay on norms and biases carries over) and whose state is each seed's
state stacked, and it writes everything back into the K models (`unpack`) so that evaluation, checkpoints and
results are the unpacked run's own code. Each seed sees its own batch: a step takes (K, B, ...) images, one batch
per seed, computes K losses under `vmap`, and back-propagates their sum, whose gradient for each seed's parameters
is that seed's own. Gradient clipping is per seed (each seed's own total norm, as `clip_grad_norm_` computes it),
EMA updates are per seed (the same lerp as timm's ModelEmaV3).

What cannot be packed is refused before anything runs (`check_packable`, called by validation): BatchNorm (its
running statistics are buffers written in place, which `vmap` cannot do), random masks inside the model (dropout,
drop path: one draw for the pack is not each seed's own draw), Mixup/CutMix, fp16's grad scaler (one inf skips
every seed's step), optimizers whose update is not elementwise (LAMB, LARS, Adafactor, ... use a whole tensor's
norm: over stacked parameters, the norm of all seeds together), torch.compile, wandb (one run per process) and
several processes (torchrun).
"""

from __future__ import annotations

import copy
import os
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from timm.layers import DropPath, Mlp
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from metaformer.block import MetaFormerBlock
from metaformer.engine.data import aug_config
from metaformer.errors import ConfigError

# Optimizers (timm names) whose update of a parameter reads only that parameter's own elements, so that one
# optimizer over stacked (K, ...) parameters updates each seed exactly as its own optimizer would.
ELEMENTWISE_OPTIMIZERS = ("adamw", "adam", "sgd", "nesterov", "momentum")
PACKABLE_OPTIMIZERS = (torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD)


def pack_seeds_of(cfg: DictConfig) -> list[int]:
    """The seeds a config trains: `seed`, `seed + 1`, ..., `seed + trainer.pack_seeds - 1`."""
    k = int(cfg.trainer.get("pack_seeds") or 1)
    return [int(cfg.seed) + i for i in range(k)]


def check_packable(cfg: DictConfig, model: nn.Module) -> None:
    """Raise ConfigError (one line) where `trainer.pack_seeds=K` (K > 1) cannot train the seeds as one vmapped
    model; `model` may be on the meta device."""
    k = cfg.trainer.get("pack_seeds")
    if k is None or k == 1:
        return
    if k < 1:
        raise ConfigError(f"trainer.pack_seeds must be a positive integer, got {k}")
    what = f"trainer.pack_seeds={k} trains the seeds as one vmapped model"
    seeds = pack_seeds_of(cfg)
    sweep = f"train the seeds as separate runs (-m seed={','.join(map(str, seeds))})"
    if any(isinstance(m, _BatchNorm) for m in model.modules()):
        raise ConfigError(
            f"{what}, and BatchNorm's running statistics cannot be vmapped (norm=bn; poolformer_cpu_patch4's "
            f"block is BatchNorm); use a norm without them (norm=gn, norm=ln), or {sweep}"
        )
    random = [
        type(m).__name__
        for m in model.modules()
        if (isinstance(m, nn.Dropout) and m.p > 0) or (isinstance(m, DropPath) and m.drop_prob > 0)
    ]
    if random:
        raise ConfigError(
            f"{what}, and {random[0]} draws random masks that a pack cannot draw as each seed's own run does; "
            f"set model.drop_path_rate=0 and model.drop_rate=0, or {sweep}"
        )
    aug = aug_config(cfg.get("aug"))
    if aug.mixup > 0 or aug.cutmix > 0:
        raise ConfigError(f"{what}, which does not do Mixup/CutMix; set aug.mixup=0 aug.cutmix=0, or {sweep}")
    t = cfg.trainer
    if t.precision == "fp16":
        raise ConfigError(f"{what}, and fp16's grad scaler would skip every seed's step for one seed's inf; "
                          f"use trainer.precision=bf16 or fp32")  # fmt: skip
    if t.get("compile"):
        raise ConfigError(f"{what}, which is not compiled; set trainer.compile=false")
    opt = str(cfg.optim.get("opt")).lower()
    if opt not in ELEMENTWISE_OPTIMIZERS:
        raise ConfigError(
            f"{what}, with one optimizer over the stacked parameters: optim.opt={opt} is not elementwise "
            f"(it would mix the seeds); use one of {', '.join(ELEMENTWISE_OPTIMIZERS)}, or {sweep}"
        )
    if cfg.logger.get("name") == "wandb":
        raise ConfigError(f"{what} in one process, and wandb logs one run per process; use logger=csv")
    resume = cfg.get("resume")
    if resume is not None and not isinstance(resume, bool):
        raise ConfigError(f"{what}: resume={resume} is for one run; a packed run continues in its own folder "
                          f"(resume=true, each seed from its seed_<S>/last.pt)")  # fmt: skip
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"{what} in one process; run it without torchrun")


def _packed_mlp(channels_last: bool) -> Callable[[MetaFormerBlock, torch.Tensor], torch.Tensor]:
    """A MetaFormerBlock's channel MLP for the pack's template: the layout is the run's (`channels_last`), decided
    up front, since `vmap` cannot answer the block's own question (`is_contiguous(memory_format=...)`). The
    arithmetic is block.channel_mlp's: linear layers over channels on channels-last input (and on a 1x1 grid,
    where both layouts are one), the 1x1 convolutions otherwise."""

    def mlp_forward(block: MetaFormerBlock, x: torch.Tensor) -> torch.Tensor:
        mlp = block.mlp
        linear = channels_last or tuple(x.shape[-2:]) == (1, 1)
        if not (linear and x.dim() == 4 and isinstance(mlp, Mlp) and isinstance(mlp.norm, nn.Identity)):
            return mlp(x)
        fc1, fc2 = mlp.fc1, mlp.fc2
        n, c, height, width = x.shape
        # Rows of pixels, (N*H*W, C): under vmap one batched matrix product per layer (one per seed); a 4-D
        # input would make vmap's linear broadcast the weights over N*H and multiply N*H small matrices.
        h = F.linear(x.permute(0, 2, 3, 1).reshape(-1, c), fc1.weight.flatten(1), fc1.bias)
        h = mlp.drop1(mlp.act(h))
        h = mlp.drop2(F.linear(h, fc2.weight.flatten(1), fc2.bias))
        return h.reshape(n, height, width, -1).permute(0, 3, 1, 2)

    return mlp_forward


def template_of(model: nn.Module, channels_last: bool) -> nn.Module:
    """A weightless (meta) copy of `model` whose forward `functional_call` runs with each seed's weights."""
    template = copy.deepcopy(model).to("meta")
    mlp_forward = _packed_mlp(channels_last)
    for block in template.modules():
        if isinstance(block, MetaFormerBlock) and block.channel_mlp:
            block._mlp = types.MethodType(mlp_forward, block)  # this copy's own; the class is untouched
    return template.train()


def stack_images(xs: Sequence[torch.Tensor], channels_last: bool) -> torch.Tensor:
    """K batches (B, C, H, W) as one (K, B, C, H, W) tensor whose K slices keep the batches' layout."""
    if channels_last and xs[0].dim() == 4:
        return torch.stack([x.permute(0, 2, 3, 1) for x in xs]).permute(0, 1, 4, 2, 3)
    return torch.stack(list(xs))


class PackedStepper:
    """K models of one architecture trained as one: stacked parameters and buffers, one optimizer over them with
    each seed's state stacked, per-seed clipping and EMA. `unpack()` writes it all back into the K models.

    `models`, `optimizers` and `emas` are the seeds' own (their unpacked runs' parts); the optimizers must be of
    one kind with the same param groups (the same config), and at the same step.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        optimizers: Sequence[torch.optim.Optimizer],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        channels_last: bool = False,
        grad_clip: float | None = None,
        emas: Sequence[Any] | None = None,
    ) -> None:
        if not all(isinstance(o, PACKABLE_OPTIMIZERS) for o in optimizers):
            raise ConfigError(
                f"packed seeds need an elementwise optimizer, got {type(optimizers[0]).__name__}"
            )
        self.models = [m.train() for m in models]  # in training mode, as the loop puts a model
        self.optimizers = list(optimizers)
        self.k = len(self.models)
        self.loss_fn, self.channels_last, self.grad_clip = loss_fn, channels_last, grad_clip
        self.template = template_of(self.models[0], channels_last)
        self.params, self.buffers = stack_module_state(self.models)
        self.names = {id(p): n for n, p in self.models[0].named_parameters()}
        self.optimizer = self._stack_optimizer()
        self.emas = list(emas) if emas and emas[0] is not None else None
        self.ema_state = self._stack([e.module.state_dict() for e in self.emas]) if self.emas else None
        self._losses = vmap(self._loss)

    # Building and writing back ---------------------------------------------------------------------------

    @staticmethod
    def _stack(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {key: torch.stack([s[key].detach() for s in states]) for key in states[0]}

    def _stack_optimizer(self) -> torch.optim.Optimizer:
        first = self.optimizers[0]
        groups = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [self.params[self.names[id(p)]] for p in g["params"]]}
            for g in first.param_groups
        ]  # fmt: skip
        packed = type(first)(groups)
        packed.defaults = dict(first.defaults)
        seeds_params = [[p for g in o.param_groups for p in g["params"]] for o in self.optimizers]
        for i, stacked in enumerate(p for g in packed.param_groups for p in g["params"]):
            own = [params[i] for params in seeds_params]
            states = [o.state.get(p) for o, p in zip(self.optimizers, own, strict=True)]
            if not states[0]:
                continue  # no step taken yet
            packed.state[stacked] = {
                key: torch.stack([s[key] for s in states]) if _per_seed(key, value, own[0]) else _copy(value)
                for key, value in states[0].items()
            }
        return packed

    @torch.no_grad()
    def unpack(self) -> None:
        """Write the stacked weights, buffers, optimizer state and EMA weights back into the K models (their
        optimizers and EMAs), which then hold exactly what their own unpacked runs would."""
        for k, model in enumerate(self.models):
            for name, p in model.named_parameters():
                p.copy_(self.params[name][k])
            for name, b in model.named_buffers():
                b.copy_(self.buffers[name][k])
        seeds_params = [[p for g in o.param_groups for p in g["params"]] for o in self.optimizers]
        for i, stacked in enumerate(p for g in self.optimizer.param_groups for p in g["params"]):
            state = self.optimizer.state.get(stacked)
            if not state:
                continue
            for k, (opt, params) in enumerate(zip(self.optimizers, seeds_params, strict=True)):
                opt.state[params[i]] = {
                    key: value[k].clone() if _per_seed(key, value, stacked) else _copy(value)
                    for key, value in state.items()
                }
        if self.emas is not None and self.ema_state is not None:
            for k, ema in enumerate(self.emas):
                for key, value in ema.module.state_dict().items():
                    value.copy_(self.ema_state[key][k])

    # Training --------------------------------------------------------------------------------------------

    def _loss(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> torch.Tensor:
        return self.loss_fn(functional_call(self.template, (params, buffers), (x,)), y)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The K seeds' losses on their own batches: `x` (K, B, ...), `y` (K, B) -> (K,)."""
        return self._losses(self.params, self.buffers, x, y)

    def set_lr(self, optimizer: torch.optim.Optimizer) -> None:
        """Take the learning rates of `optimizer` (a seed's, which its scheduler sets) for every seed."""
        for packed, own in zip(self.optimizer.param_groups, optimizer.param_groups, strict=True):
            packed["lr"] = own["lr"]

    @torch.no_grad()
    def clip_(self) -> torch.Tensor:
        """Clip each seed's gradients to its own total norm `grad_clip` (clip_grad_norm_'s rule, per seed);
        return the K norms before clipping."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in grads])  # (params, K)
        total = torch.linalg.vector_norm(norms, 2, dim=0)
        if self.grad_clip:
            coef = torch.clamp(self.grad_clip / (total + 1e-6), max=1.0)
            for g in grads:
                g.mul_(coef.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))
        return total

    def step(self, decay: float | None = None) -> None:
        """One optimizer step for every seed (after clipping, when asked), then the EMA update with `decay`."""
        if self.grad_clip:
            self.clip_()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema_state is not None and decay is not None:
            with torch.no_grad():
                keys = [k for k, v in self.ema_state.items() if v.is_floating_point()]
                current = {**self.params, **self.buffers}
                model_values = [current[k].detach() for k in keys]
                torch._foreach_lerp_([self.ema_state[k] for k in keys], model_values, weight=1.0 - decay)
                for k, v in self.ema_state.items():
                    if not v.is_floating_point():
                        v.copy_(current[k])


def _per_seed(key: str, value: Any, param: torch.Tensor) -> bool:
    """True for optimizer state shaped like its parameter (Adam's moments, SGD's momentum buffer), which each
    seed has of its own; False for what the seeds share (the step count: every seed takes every step)."""
    return key != "step" and isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(param.shape)


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)
