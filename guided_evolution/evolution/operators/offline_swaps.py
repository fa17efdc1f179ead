"""Offline edit: swap a torch call for a compatible one (activations, pooling, normalisation,
optimisers), keeping the arguments that still apply and saying which were dropped."""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass

from guided_evolution.evolution.operators.offline_source import (
    Source,
    dotted_name,
    format_float,
    is_number,
    position,
)

_ACT_MODULES = ("ReLU", "GELU", "SiLU", "ELU", "LeakyReLU", "Tanh", "Hardswish", "Mish")
_ACT_MODULES_INPLACE = frozenset({"ReLU", "SiLU", "ELU", "LeakyReLU", "Hardswish", "Mish"})
_ACT_FUNCS = ("relu", "gelu", "silu", "elu", "leaky_relu", "tanh", "hardswish", "mish")
_ACT_FUNCS_INPLACE = frozenset({"relu", "silu", "elu", "leaky_relu", "hardswish", "mish"})
_TORCH_ACTS = frozenset({"relu", "tanh"})  # torch.<name> activations (swapped via functional)
_FUNCTIONAL_PREFIXES = ("F", "functional", "nn.functional", "torch.nn.functional")
_POOL_RE = re.compile(r"(Adaptive)?(Max|Avg)Pool([123])d")
_FPOOL_RE = re.compile(r"(adaptive_)?(max|avg)_pool([123])d")
_NORM_RE = re.compile(r"(BatchNorm|InstanceNorm)([23])d")
_OPTIMISERS = {
    "SGD": frozenset({"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"}),
    "Adam": frozenset({"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"}),
    "AdamW": frozenset({"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"}),
    "RMSprop": frozenset({"lr", "alpha", "eps", "weight_decay", "momentum", "centered"}),
}



@dataclass(frozen=True)
class _Swap:
    start: int
    end: int
    text: str
    description: str


def _simple_args(call: ast.Call) -> bool:
    return not any(isinstance(a, ast.Starred) for a in call.args) and all(
        k.arg is not None for k in call.keywords
    )


def _render_call(
    src: Source,
    func: str,
    call: ast.Call,
    n_positional: int,
    keep: frozenset[str],
    replace: dict[int, str] | None = None,
) -> tuple[str, list[str]]:
    """`func(...)` keeping the first positional args and the keywords in `keep`; dropped names.

    `replace` maps id(argument node) -> new source for that argument.
    """
    replace = replace or {}

    def text(node: ast.expr) -> str:
        return replace.get(id(node), src.src(node))

    parts = [text(a) for a in call.args[:n_positional]]
    dropped = [f"arg {i + 1}" for i in range(n_positional, len(call.args))]
    for kw in call.keywords:
        if kw.arg in keep:
            parts.append(f"{kw.arg}={text(kw.value)}")
        else:
            dropped.append(str(kw.arg))
    return f"{func}({', '.join(parts)})", dropped


def _dropped_note(dropped: list[str]) -> str:
    return f" (dropped {', '.join(dropped)})" if dropped else ""


def _swap_activation_module(
    src: Source, call: ast.Call, prefix: str, name: str, rng: random.Random
) -> _Swap:
    target = rng.choice([a for a in _ACT_MODULES if a != name])
    keep = frozenset({"inplace"}) if target in _ACT_MODULES_INPLACE else frozenset()
    text, dropped = _render_call(src, f"{prefix}.{target}", call, 0, keep)
    start, end = src.span(call)
    return _Swap(start, end, text, f"swapped {name} -> {target}{_dropped_note(dropped)}")


def _swap_activation_func(
    src: Source, call: ast.Call, prefix: str, name: str, rng: random.Random
) -> _Swap:
    target = rng.choice([a for a in _ACT_FUNCS if a != name])
    if prefix == "torch":
        prefix = "torch.nn.functional"
    keep = frozenset({"input", "inplace"} if target in _ACT_FUNCS_INPLACE else {"input"})
    text, dropped = _render_call(src, f"{prefix}.{target}", call, 1, keep)
    start, end = src.span(call)
    return _Swap(start, end, text, f"swapped {name} -> {target}{_dropped_note(dropped)}")


def _swap_pool(src: Source, call: ast.Call, prefix: str, name: str, functional: bool) -> _Swap:
    if functional:
        match = _FPOOL_RE.fullmatch(name)
        assert match is not None
        adaptive, kind, dim = match.groups()
        target = f"{adaptive or ''}{'avg' if kind == 'max' else 'max'}_pool{dim}d"
        n_pos, keep = (
            (2, {"input", "output_size"})
            if adaptive
            else (4, {"input", "kernel_size", "stride", "padding", "ceil_mode"})
        )
    else:
        match = _POOL_RE.fullmatch(name)
        assert match is not None
        adaptive, kind, dim = match.groups()
        target = f"{adaptive or ''}{'Avg' if kind == 'Max' else 'Max'}Pool{dim}d"
        n_pos, keep = (
            (1, {"output_size"})
            if adaptive
            else (3, {"kernel_size", "stride", "padding", "ceil_mode"})
        )
    text, dropped = _render_call(src, f"{prefix}.{target}", call, n_pos, frozenset(keep))
    start, end = src.span(call)
    return _Swap(start, end, text, f"swapped {name} -> {target}{_dropped_note(dropped)}")


def _argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    """A call's argument given by position or by keyword, if present."""
    if len(call.args) > position:
        return call.args[position]
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return None


def _eps(src: Source, call: ast.Call) -> str:
    for kw in call.keywords:
        if kw.arg == "eps":
            return f", eps={src.src(kw.value)}"
    return ""


def _swap_norm(
    src: Source, call: ast.Call, prefix: str, name: str, rng: random.Random
) -> _Swap | None:
    start, end = src.span(call)
    if name == "GroupNorm":
        channels = _argument(call, 1, "num_channels")
        if channels is None:
            return None
        target = "BatchNorm2d"
        text = f"{prefix}.{target}({src.src(channels)}{_eps(src, call)})"
        return _Swap(start, end, text, f"swapped GroupNorm -> {target}")
    match = _NORM_RE.fullmatch(name)
    assert match is not None
    kind, dim = match.groups()
    channels = _argument(call, 0, "num_features")
    if channels is None:
        return None
    c = src.src(channels)
    if kind == "InstanceNorm":
        target = f"BatchNorm{dim}d"
        text = f"{prefix}.{target}({c}{_eps(src, call)})"
    elif dim == "2" and rng.random() < 0.5:
        target = "GroupNorm"
        groups = 1
        value = getattr(channels, "value", None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            groups = rng.choice([g for g in (1, 2, 4, 8, 16, 32) if value % g == 0])
        text = f"{prefix}.GroupNorm({groups}, {c}{_eps(src, call)})"
    else:
        target = f"InstanceNorm{dim}d"
        text = f"{prefix}.{target}({c}{_eps(src, call)}, affine=True)"
    return _Swap(start, end, text, f"swapped {name} -> {target}")


def _swap_optimiser(
    src: Source, call: ast.Call, prefix: str, name: str, rng: random.Random
) -> _Swap:
    target = rng.choice([o for o in _OPTIMISERS if o != name])
    replace: dict[int, str] = {}
    note = ""
    lr = _argument(call, 1, "lr")
    value = getattr(lr, "value", None)
    adaptive_change = (name == "SGD") != (target == "SGD")
    if lr is not None and adaptive_change and is_number(lr) and value > 0:  # type: ignore[operator]
        new_lr = format_float(value * (0.1 if target != "SGD" else 10.0))  # type: ignore[operator]
        replace[id(lr)] = new_lr
        note = f" (lr {src.src(lr)} -> {new_lr})"
    keep = _OPTIMISERS[target] | {"params"}
    text, dropped = _render_call(src, f"{prefix}.{target}", call, 2, keep, replace)
    start, end = src.span(call)
    return _Swap(start, end, text, f"swapped {name} -> {target}{_dropped_note(dropped)}{note}")


def _swap_candidates(src: Source) -> list[tuple[ast.AST, str]]:
    """(node, family) for every swappable call or activation class reference."""
    out: list[tuple[ast.AST, str]] = []
    calls: set[int] = set()
    for node in src.nodes:
        if isinstance(node, ast.Call) and _simple_args(node):
            family = _call_family(dotted_name(node.func))
            if family:
                out.append((node, family))
                calls.add(id(node.func))
    for node in src.nodes:
        if isinstance(node, ast.Attribute) and id(node) not in calls:
            name = dotted_name(node)
            if name and _call_family(name) == "act_module":
                out.append((node, "act_ref"))
    out.sort(key=lambda item: position(item[0]))
    return out


def _call_family(name: str | None) -> str | None:
    if not name or "." not in name:
        return None
    prefix, last = name.rsplit(".", 1)
    nn_prefix = prefix == "nn" or prefix.endswith(".nn")
    if nn_prefix and last in _ACT_MODULES:
        return "act_module"
    if (prefix in _FUNCTIONAL_PREFIXES and last in _ACT_FUNCS) or (
        prefix == "torch" and last in _TORCH_ACTS
    ):
        return "act_func"
    if nn_prefix and _POOL_RE.fullmatch(last):
        return "pool"
    if prefix in _FUNCTIONAL_PREFIXES and _FPOOL_RE.fullmatch(last):
        return "fpool"
    if nn_prefix and (_NORM_RE.fullmatch(last) or last == "GroupNorm"):
        return "norm"
    if (prefix == "optim" or prefix.endswith(".optim")) and last in _OPTIMISERS:
        return "optim"
    return None


def swap_edit(src: Source, rng: random.Random, strength: float) -> tuple[str, str] | None:
    candidates = _swap_candidates(src)
    rng.shuffle(candidates)
    for node, family in candidates:
        swap = _make_swap(src, node, family, rng)
        if swap is not None:
            return src.edit([(swap.start, swap.end, swap.text)]), swap.description
    return None


def _make_swap(src: Source, node: ast.AST, family: str, rng: random.Random) -> _Swap | None:
    if family == "act_ref":
        prefix, name = (dotted_name(node) or "").rsplit(".", 1)
        target = rng.choice([a for a in _ACT_MODULES if a != name])
        start, end = src.span(node)
        return _Swap(start, end, f"{prefix}.{target}", f"swapped {name} -> {target}")
    assert isinstance(node, ast.Call)
    prefix, name = (dotted_name(node.func) or "").rsplit(".", 1)
    if family == "act_module":
        return _swap_activation_module(src, node, prefix, name, rng)
    if family == "act_func":
        return _swap_activation_func(src, node, prefix, name, rng)
    if family in ("pool", "fpool"):
        return _swap_pool(src, node, prefix, name, functional=family == "fpool")
    if family == "norm":
        if name == "GroupNorm" and "2d" not in src.text:
            return None
        return _swap_norm(src, node, prefix, name, rng)
    if family == "optim":
        return _swap_optimiser(src, node, prefix, name, rng)
    return None
