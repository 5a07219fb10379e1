"""One record per LoRA initialisation, in the style of lm-eval's registry.

Each init is a function ``init_x(model, rank, alpha, target_modules, task_type=None, **options)``
that returns a PEFT model, decorated with what the workflow needs to know about it::

    @register("milora", residual=True, paper="arXiv:2406.09044")
    def init_milora(model, rank, alpha, target_modules, task_type=None): ...

``residual``: the frozen base becomes ``W - scaling * B A``, so the output at step 0 equals the
base model's (a callable of the options where that depends on them). ``changes_output``: the
method means the step-0 output to differ from the base model's (LoRA-One's first step, Non-zero
LoRA's unsubtracted product); every other method keeps it. ``needs``: what the workflow
hands the init besides the model: ``"factors"`` (a decomposition artifact, ``factors_path``) or
``"data"`` (training batches, ``data``). ``run_seeded``: the init's ``seed`` option takes the
run's seed unless the config sets it (PiSSA's randomised SVD). The README's methods table and the config schema's
method list are checked against this record by tests/test_inits.py.
"""

# torch and peft are imported inside the functions: the config layer reads the @register records while
# Snakemake parses the workflow (in every cluster job too), which must not import them.
from __future__ import annotations

import inspect
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from inilora.inits.residual import ADAPTER_OPTIONS, adapter_options, lora_layers, refresh_magnitudes

if TYPE_CHECKING:
    from peft import PeftModel
    from torch import nn

NEEDS = ("factors", "data")
FIXED_ARGS = ("model", "rank", "alpha", "target_modules", "task_type")


class InitError(ValueError):
    pass


@dataclass(frozen=True)
class Method:
    """A registered init: its function and what the workflow must know about it."""

    name: str
    init: Callable[..., PeftModel]
    residual: bool | Callable[[dict], bool]
    needs: tuple[str, ...]
    paper: str
    changes_output: bool | Callable[[dict], bool] = False
    run_seeded: bool | Callable[[dict], bool] = False

    def __call__(self, *args, **kwargs) -> PeftModel:
        """Run the init; its option names and annotated values are checked first, on every path.

        The adapter options (``use_rslora``, ``use_dora``) go to every LoRA config the init builds;
        with DoRA, each magnitude is then taken from the weight the init left (W + s B A), so DoRA
        keeps the init's step-0 output."""
        check_options(self.name, {k: v for k, v in kwargs.items() if k != "task_type"})
        adapter = {k: kwargs.pop(k) for k in ADAPTER_OPTIONS if k in kwargs}
        with adapter_options(**adapter):
            peft_model = self.init(*args, **kwargs)
        if adapter.get("use_dora"):
            refresh_magnitudes(peft_model)
        return peft_model

    def takes_adapter_options(self, options: dict) -> bool:
        """Whether the adapter options among ``options`` make sense with this init (:data:`NO_DORA`)."""
        return not (options.get("use_dora") and self.name in NO_DORA)

    def takes_run_seed(self, options: dict | None = None) -> bool:
        """Whether the init draws random numbers that the workflow seeds with the run's seed (option
        ``seed``), as PiSSA's randomised SVD: its draw is then part of the job's spec."""
        return self.run_seeded(options or {}) if callable(self.run_seeded) else bool(self.run_seeded)

    def is_residual(self, options: dict | None = None) -> bool:
        return self.residual(options or {}) if callable(self.residual) else bool(self.residual)

    def keeps_output(self, options: dict | None = None) -> bool:
        """Whether the model's output at step 0 equals the base model's (what the contract tests hold it to)."""
        changes = self.changes_output(options or {}) if callable(self.changes_output) else self.changes_output
        return not changes

    @property
    def option_names(self) -> set[str]:
        """The keyword options the init takes (from its function's signature), and the adapter
        options every method takes (``use_rslora``, ``use_dora``)."""
        return (set(inspect.signature(self.init).parameters) - set(FIXED_ARGS)) | set(ADAPTER_OPTIONS)

    @property
    def defaults(self) -> dict:
        own = {k: p.default for k, p in inspect.signature(self.init).parameters.items()
               if k in self.option_names and p.default is not inspect.Parameter.empty}
        return {**own, **{k: False for k in ADAPTER_OPTIONS}}


REGISTRY: dict[str, Method] = {}

# Inits that refuse DoRA, and why (the contract tests in tests/test_init_contract.py hold the others).
NO_DORA: dict[str, str] = {
    "mica": "PEFT has no DoRA form of MiCA (its LoRA variants table refuses the combination ('mica', 'use_dora'))",
}


def register(name: str, *, residual: bool | Callable[[dict], bool] = False, needs: tuple[str, ...] = (),
             paper: str, changes_output: bool | Callable[[dict], bool] = False,
             run_seeded: bool | Callable[[dict], bool] = False):
    """Add the decorated init function to REGISTRY under ``name``."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"register('{name}'): unknown needs {sorted(unknown)}; valid: {list(NEEDS)}")

    def add(init: Callable[..., PeftModel]) -> Callable[..., PeftModel]:
        if name in REGISTRY:
            raise ValueError(f"init method '{name}' is registered twice")
        REGISTRY[name] = Method(name, init, residual, tuple(needs), paper, changes_output, run_seeded)
        return init

    return add


def get(method: str) -> Method:
    """The record of ``method``; a miss lists what exists."""
    if method not in REGISTRY:
        raise InitError(f"unknown init method '{method}'; valid: {sorted(REGISTRY)}")
    return REGISTRY[method]


def needing(what: str) -> list[str]:
    """Methods whose record needs ``what`` ("factors" or "data")."""
    return sorted(m for m, rec in REGISTRY.items() if what in rec.needs)


def is_residual(method: str, options: dict | None = None) -> bool:
    """Whether ``method`` with ``options`` moves part of W into the adapter (base = W - s B A)."""
    return get(method).is_residual(options)


def keeps_output(method: str, options: dict | None = None) -> bool:
    """Whether ``method`` with ``options`` leaves the model's step-0 output equal to the base model's."""
    return get(method).keeps_output(options)


def option_names(method: str) -> set[str]:
    """The keyword options ``method`` takes (from its function's signature)."""
    return get(method).option_names


def option_defaults(method: str) -> dict:
    """The default value of each keyword option of ``method`` (its function's signature)."""
    return get(method).defaults


def check_options(method: str, options: dict, extra: set[str] = frozenset()) -> None:
    """Unknown option names, and values of the wrong type or outside a ``Literal``, are refused before any work."""
    allowed = option_names(method) | set(extra)
    unknown = set(options) - allowed
    if unknown:
        raise InitError(f"method '{method}' got unknown option(s) {sorted(unknown)}; valid: {sorted(allowed) or 'none'}")
    hints = {**_option_hints(get(method).init), **{k: bool for k in ADAPTER_OPTIONS}}
    for name, value in options.items():
        if name in hints and not _fits(value, hints[name]):
            raise InitError(f"method '{method}' option {name}={value!r}: allowed is {_describe(hints[name])}")
    if not get(method).takes_adapter_options(options):
        raise InitError(f"method '{method}' option use_dora=True: {NO_DORA[method]}")


def check_positive(method: str, option: str, value, integer: bool = False) -> None:
    """A value range the annotations cannot say: ``value`` > 0 (an int if ``integer``)."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise InitError(f"method '{method}' option {option}={value!r}: allowed is {'an int' if integer else 'a number'} > 0")


def _option_hints(init: Callable) -> dict:
    """The init's parameter annotations, evaluated one at a time rather than as ``get_type_hints(init)``:
    ``-> PeftModel`` or a tensor names a type imported only for type checking. A parameter whose
    annotation names one is left out; ``_fits`` passes such a type anyway.
    """
    hints, globalns = {}, getattr(inspect.unwrap(init), "__globals__", {})
    for name, annotation in getattr(init, "__annotations__", {}).items():
        if name == "return":
            continue
        try:
            hints.update(typing.get_type_hints(types.SimpleNamespace(__annotations__={name: annotation}),
                                               globalns=globalns))
        except NameError:
            pass
    return hints


def _arms(hint) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _fits(value, hint) -> bool:
    for arm in _arms(hint):
        if typing.get_origin(arm) is typing.Literal:
            if any(value == v and type(value) is type(v) for v in typing.get_args(arm)):
                return True
        elif arm is type(None):
            if value is None:
                return True
        elif arm is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif arm in (int, str):
            if isinstance(value, arm) and not isinstance(value, bool):
                return True
        elif arm is bool:
            if isinstance(value, bool):
                return True
        else:  # a type this check does not read (a tensor, an iterable of batches): the init checks it
            return True
    return False


def _describe(hint) -> str:
    words = []
    for arm in _arms(hint):
        if typing.get_origin(arm) is typing.Literal:
            words.append(f"one of {list(typing.get_args(arm))}")
        else:
            words.append({type(None): "null", float: "a number", int: "an int", str: "a string",
                          bool: "true or false"}.get(arm, str(arm)))
    return " or ".join(words)


def apply_init(
    model: nn.Module,
    method: str,
    rank: int,
    alpha: float,
    target_modules: list[str],
    task_type: str | None = None,
    **options,
) -> PeftModel:
    """Wrap ``model`` in a PEFT LoRA of ``rank`` on ``target_modules``, initialised by ``method``.

    A model whose base weights an earlier residual init changed is warned about (once): an adapter
    trained for the pretrained weights does not fit them (peft#2184).
    """
    record = get(method)
    changed_by = getattr(model, CHANGED_BASE, None)
    if changed_by:
        warn_changed_base(model, changed_by, f"a new '{method}' adapter")
    peft_model = record(model, rank, alpha, target_modules, task_type=task_type, **options)
    check_finite(peft_model, method)
    if record.is_residual(options):
        mark_changed_base(peft_model, method)
    return peft_model


CHANGED_BASE = "_inilora_base_changed_by"  # set on the base model (and the PeftModel) by a residual init


def mark_changed_base(peft_model: PeftModel, method: str) -> None:
    """Remember that ``method`` changed the base weights, and warn when another adapter joins them.

    The PeftModel's class becomes a subclass whose ``add_adapter`` and ``load_adapter`` warn first
    (a class, not instance attributes, so that a deepcopy guards its own copy).
    """
    for holder in (peft_model.base_model.model, peft_model):
        object.__setattr__(holder, CHANGED_BASE, method)
    peft_model.__class__ = _guarded_class(type(peft_model))


_GUARDED: dict[type, type] = {}


def _guarded_class(cls: type) -> type:
    if cls in _GUARDED.values():
        return cls
    if cls not in _GUARDED:
        def add_adapter(self, adapter_name, *args, **kwargs):
            warn_changed_base(self, getattr(self, CHANGED_BASE), f"adapter '{adapter_name}'")
            return cls.add_adapter(self, adapter_name, *args, **kwargs)

        def load_adapter(self, model_id, adapter_name, *args, **kwargs):
            warn_changed_base(self, getattr(self, CHANGED_BASE), f"adapter '{adapter_name}' from {model_id}")
            return cls.load_adapter(self, model_id, adapter_name, *args, **kwargs)

        _GUARDED[cls] = type(f"{cls.__name__}WithChangedBase", (cls,),
                             {"add_adapter": add_adapter, "load_adapter": load_adapter, "__module__": __name__})
    return _GUARDED[cls]


def warn_changed_base(model: nn.Module, method: str, what: str) -> None:
    """Say once per model, in plain words, why another adapter on a residual-changed base is wrong."""
    if getattr(model, "_inilora_warned_changed_base", False):
        return
    object.__setattr__(model, "_inilora_warned_changed_base", True)
    warnings.warn(
        f"The '{method}' init changed this model's base weights: each targeted W is now W - scaling * B A, "
        f"and that part of W lives in the '{method}' adapter. {what[0].upper() + what[1:]} added here sees "
        "those changed weights, not the pretrained ones, so an adapter trained on the pretrained model will "
        "not behave as it was trained to. Load other adapters on a fresh copy of the pretrained model, or save "
        "this one with save_pretrained(..., path_initial_model_for_weight_conversion=<its step-0 adapter>) "
        "(PEFT's rank-2r conversion, as inilora's finetune rule does) so that it applies to the unmodified base.",
        UserWarning, stacklevel=3)


def check_finite(peft_model: PeftModel, method: str) -> None:
    """Stop on NaN/inf in any adapter or changed base weight, naming the tensor."""
    import torch

    for name, layer in lora_layers(peft_model).items():
        for label, t in (("lora_A", layer.lora_A["default"].weight), ("lora_B", layer.lora_B["default"].weight),
                         ("base weight", layer.get_base_layer().weight)):
            if not bool(torch.isfinite(t).all()):
                raise InitError(f"init '{method}' produced non-finite values in {name} {label}; "
                                "check the method's options (a std too large?)")


def save_initial_adapter(peft_model: PeftModel, out_dir: Path) -> None:
    """Save the step-0 adapter marked as a plain LoRA, for PEFT's rank-2r conversion later.

    PEFT's protocol (examples/pissa_finetuning): the initial adapter's config must say
    ``init_lora_weights=True`` or loading it would initialise (and subtract) again.
    """
    cfg = peft_model.peft_config["default"]
    original = cfg.init_lora_weights
    cfg.init_lora_weights = True
    try:
        peft_model.save_pretrained(str(out_dir))
    finally:
        cfg.init_lora_weights = original
