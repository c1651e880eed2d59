"""The optimizer base: param groups over the flat arena, flat state buffers, state dicts.

Each optimizer keeps its state (moments, accumulators) in flat buffers the size of the
parameter arena, aligned with it, so one step is one op call per contiguous run of
parameters: one call for a whole model in a single group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from .._arena import Arena, Parameter, segments
from ..backends import get_backend

__all__ = ["Optimizer", "check_range"]


def check_range(name: str, value: float, low: float = 0.0, high: float | None = None,
                high_open: bool = False) -> float:
    """``value`` as a float in ``[low, high]`` (or ``[low, high)``), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    ok = np.isfinite(v) and v >= low
    if high is not None:
        ok = ok and (v < high if high_open else v <= high)
    if not ok:
        bound = "" if high is None else (f", {high})" if high_open else f", {high}]")
        raise ValueError(f"invalid {name}: {value} (expected [{low}{bound or ', inf)'}")
    return v


class Optimizer:
    """Base class of fastmlp's optimizers (PyTorch's interface).

    Parameters
    ----------
    params : iterable of Parameter, a Module, or iterable of dicts
        Parameters to optimise, or param groups (``{"params": [...], "lr": ...}``), each
        overriding the defaults.
    defaults : dict
        Hyper-parameter defaults of the subclass.

    Attributes
    ----------
    param_groups : list of dict
        Hyper-parameters of each group (``lr`` is read at every step, so schedulers and users
        may change it).
    """

    #: names of the flat state buffers this optimizer may use
    state_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any, defaults: Mapping[str, Any]):
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self._buffers: dict[int, dict[str, Any]] = {}
        self._arenas: dict[int, Arena] = {}
        if hasattr(params, "parameters") and callable(params.parameters):
            params = params.parameters()
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], Mapping) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, group: Mapping[str, Any]) -> None:
        """Add a group of parameters with its own hyper-parameters."""
        group = dict(group)
        params = group.get("params")
        if hasattr(params, "parameters") and callable(params.parameters):
            params = params.parameters()
        if isinstance(params, Parameter):
            params = [params]
        params = list(params or [])
        if not params:
            raise ValueError("a param group needs at least one parameter")
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"optimizer params must be fastmlp Parameters, got {type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one param group")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise TypeError(f"unknown hyper-parameters for {type(self).__name__}: {sorted(unknown)}")
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        group["params"] = params
        self._validate_group(group)
        group["step"] = 0
        self._init_group_state(group)
        self.param_groups.append(group)

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Check hyper-parameter ranges (subclasses extend); raise ValueError."""
        check_range("learning rate", group["lr"])
        if "weight_decay" in group:
            check_range("weight_decay", group["weight_decay"])

    def _init_group_state(self, group: dict[str, Any]) -> None:
        """Scalar state of a group besides ``step`` (e.g. NAdam's ``mu_product``)."""

    # ------------------------------------------------------------------ buffers
    def _state_fill(self, name: str, group: dict[str, Any]) -> float:
        """The starting value of state buffer ``name`` over ``group``'s parameters (subclasses
        override: Adagrad's ``sum`` starts at the group's ``initial_accumulator_value``)."""
        return 0.0

    def _buffer(self, arena: Arena, name: str):
        """The flat state buffer ``name`` for ``arena`` (allocated on first use, each param
        group's segments filled with :meth:`_state_fill`)."""
        per = self._buffers.setdefault(id(arena), {})
        self._arenas[id(arena)] = arena
        buf = per.get(name)
        if buf is None or buf.size != arena.size or buf.dtype != arena.dtype:
            buf = arena.data.copy()
            buf.fill(0)
            for group in self.param_groups:
                fill = self._state_fill(name, group)
                if fill != 0:
                    for seg_arena, a, b in segments(group["params"]):
                        if seg_arena is arena:
                            buf[a:b].fill(fill)
            per[name] = buf
        return buf

    def flat_state(self) -> dict[str, Any]:
        """The flat state buffers of a single-arena optimizer, by name (views, not copies)."""
        if len(self._buffers) > 1:
            raise ValueError("parameters span several arenas; use state_dict()")
        return dict(next(iter(self._buffers.values()), {}))

    # ------------------------------------------------------------------ step
    def zero_grad(self) -> None:
        """Set the gradients of every optimised parameter to 0 (one fill per arena)."""
        for arena, a, b in segments(p for g in self.param_groups for p in g["params"]):
            arena.grad[a:b].fill(0)

    def step(self, closure=None):
        """One update of every parameter from its ``.grad``, in place.

        Each contiguous run of a group's parameters is one call of the backend's fused
        ``<name>_step`` op. ``closure`` (optional) re-evaluates the loss and is returned."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            group["step"] += 1
            self._before_group_step(group)
            for arena, a, b in segments(group["params"]):
                be = get_backend(arena.backend_name)
                self._update(be, group, arena, a, b)
        return loss

    def _before_group_step(self, group: dict[str, Any]) -> None:
        """Update scalar group state once per step, before the kernels (e.g. NAdam)."""

    def _update(self, be, group: dict[str, Any], arena: Arena, a: int, b: int) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ state dict
    def _hyper(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {k: group[k] for k in self.defaults}

    def state_dict(self) -> dict[str, Any]:
        """PyTorch-shaped state: ``{"state": {i: {"step": t, name: array}}, "param_groups":
        [{hyper..., "params": [i, ...]}]}``; arrays are host copies, per parameter."""
        state: dict[int, dict[str, Any]] = {}
        groups = []
        index = 0
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                entry: dict[str, Any] = {"step": group["step"]}
                be = get_backend(p.arena.backend_name)
                for name, buf in self._buffers.get(id(p.arena), {}).items():
                    entry[name] = np.array(be.to_numpy(buf[p.offset:p.offset + p.size])).reshape(p.shape)
                entry.update(self._group_scalars(group))
                state[index] = entry
                ids.append(index)
                index += 1
            groups.append({**self._hyper(group), "params": ids})
        return {"state": state, "param_groups": groups}

    def _group_scalars(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, for the same parameters in the same
        groups. Everything is checked before anything is written."""
        groups = state_dict.get("param_groups")
        state = state_dict.get("state")
        if not isinstance(groups, list) or not isinstance(state, Mapping):
            raise ValueError("optimizer state_dict needs 'state' and 'param_groups'")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param groups, optimizer has {len(self.param_groups)}")
        plans = []
        index = 0
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("a param group's size differs from the saved one")
            for p in group["params"]:
                entry = state.get(index, state.get(str(index)))
                if entry is None:
                    raise ValueError(f"state_dict has no state for parameter {index}")
                for name, arr in entry.items():
                    if name == "step" or name in self._scalar_names():
                        continue
                    if name not in self.state_names:
                        raise ValueError(f"unknown state buffer {name!r} for {type(self).__name__}")
                    arr = np.asarray(arr)
                    if arr.shape != p.shape or not np.isfinite(arr).all():
                        raise ValueError(f"state {name!r} of parameter {index}: bad shape {arr.shape} or non-finite values")
                    plans.append((p, name, arr))
                index += 1
        for saved, group in zip(groups, self.param_groups):
            for k in self.defaults:
                if k in saved:
                    group[k] = saved[k]
            first = state.get(saved["params"][0], state.get(str(saved["params"][0]), {}))
            group["step"] = int(first.get("step", 0))
            for k in self._scalar_names():
                if k in first:
                    group[k] = float(first[k])
        for p, name, arr in plans:
            be = get_backend(p.arena.backend_name)
            buf = self._buffer(p.arena, name)
            buf[p.offset:p.offset + p.size] = be.asarray(arr.reshape(-1).astype(buf.dtype))

    def _scalar_names(self) -> tuple[str, ...]:
        return ()

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"  group {i}: " + ", ".join(f"{k}={g[k]!r}" for k in self.defaults))
        return "\n".join(lines + [")"])


def _as_params(params: Iterable[Any]) -> list[Parameter]:
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    if isinstance(params, Parameter):
        return [params]
    return list(params)
