"""The hyperparameters of a distillation job: one table that the API schema, the engine and both CLIs read.

Each entry names its type, default, bounds (open or closed at each end), whether null is allowed and what a
null asks for, and a help text. `validate_hyperparameters` is the one check; the API's pydantic model is
generated from the same table, and tests/test_contract.py proves that the two accept exactly the same jobs.

Values are JSON values, taken as they are: an integer setting takes an integer (not 3.0, not "3", not true),
a number setting takes an integer or a finite float, a boolean takes true or false.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contract.bounds import Bounds, as_integer, as_number
from contract.losses import LOSSES

UNIT = Bounds(0, 1)
RECIPES: tuple[str, ...] = ("auto", "plain")


class InvalidHyperparameters(ValueError):
    """A hyperparameter the job cannot run with; `name` is the setting at fault (None for the whole object)."""

    def __init__(self, name: str | None, message: str):
        super().__init__(message)
        self.name = name
        self.message = message


@dataclass(frozen=True)
class Augmentation:
    """One kind of batch augmentation and the range of its amount (0 switches it off)."""

    name: str
    inputs: str  # "features" (float inputs) or "tokens" (token ids); the other kind of data ignores it
    bounds: Bounds
    help: str


AUGMENTATIONS: tuple[Augmentation, ...] = (
    Augmentation("noise", "features", UNIT, "standard deviation of Gaussian noise added to every feature"),
    Augmentation("mixup", "features", UNIT, "alpha of the Beta(alpha, alpha) weight that mixes pairs of rows"),
    Augmentation("token_dropout", "tokens", UNIT, "fraction of real tokens turned into padding"),
    Augmentation("token_mask", "tokens", UNIT, "fraction of real tokens replaced by [MASK] (else the unknown token)"),
)
AUGMENTATION_KINDS: tuple[str, ...] = tuple(a.name for a in AUGMENTATIONS)
_AUGMENTATION = {a.name: a for a in AUGMENTATIONS}


@dataclass(frozen=True)
class Hyperparameter:
    """One setting of a job."""

    name: str
    type: type  # int, float, bool, str (one of `choices`) or dict (the augmentation object)
    default: Any
    help: str
    bounds: Bounds | None = None
    choices: tuple[str, ...] = ()
    null_means: str | None = None  # None: null is refused; else what a null asks for

    @property
    def nullable(self) -> bool:
        return self.null_means is not None

    def expectation(self) -> str:
        """What the setting takes, in words: `an integer in [1, 1000]`."""
        if self.type is int:
            what = f"an integer in {self.bounds}"
        elif self.type is float:
            what = f"a number in {self.bounds}"
        elif self.type is bool:
            what = "true or false"
        elif self.choices:
            what = "one of " + ", ".join(self.choices)
        else:
            what = 'an object of amounts by kind, such as {"noise": 0.1, "mixup": 0.2}'
        return f"{what}, or null ({self.null_means})" if self.nullable else what

    def describe(self) -> str:
        """Help text with what the setting takes and its default, for --help and the API's schema."""
        default = "null" if self.default is None else str(self.default).lower()
        return f"{self.help}: {self.expectation()}; default {default}"

    def check(self, value: Any) -> Any:
        """The value as the engine uses it, or InvalidHyperparameters."""
        if value is None:
            if self.nullable:
                return None
            raise self._refuse(value)
        if self.type is bool:
            if isinstance(value, bool):
                return value
        elif self.type is int:
            integer = as_integer(value)
            assert self.bounds is not None  # every numeric setting has bounds
            if integer is not None and self.bounds.contains(integer):
                return integer
        elif self.type is float:
            number = as_number(value)
            assert self.bounds is not None  # every numeric setting has bounds
            if number is not None and self.bounds.contains(number):
                return number
        elif self.choices:
            if isinstance(value, str) and value in self.choices:
                return value
        else:
            return check_augmentation(value)
        raise self._refuse(value)

    def _refuse(self, value: Any) -> InvalidHyperparameters:
        return InvalidHyperparameters(self.name, f"{self.name} must be {self.expectation()}; got {_short(value)}")


HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter("epochs", int, 10, "training epochs", Bounds(1, 1000)),
    Hyperparameter("batch_size", int, 64, "examples per training step", Bounds(1, 65536)),
    Hyperparameter(
        "learning_rate",
        float,
        0.001,
        "AdamW peak learning rate (linear warmup, then cosine decay)",
        Bounds(0, 10, low_open=True),
    ),
    Hyperparameter("temperature", float, 4.0, "softmax temperature of the soft targets", Bounds(0, 100, low_open=True)),
    Hyperparameter(
        "alpha",
        float,
        0.9,
        "weight of the teacher's soft targets; 1 - alpha weighs the labels (data without labels always uses 1)",
        UNIT,
    ),
    Hyperparameter("loss", str, "kl", "distillation loss", choices=LOSSES),
    Hyperparameter("seed", int, 0, "random seed of the split, initialisation and shuffling", Bounds(0, 2**31 - 1)),
    Hyperparameter(
        "patience",
        int,
        None,
        "epochs without improvement of the validation metric before stopping",
        Bounds(1, 1000),
        null_means="train every epoch, no early stop",
    ),
    Hyperparameter("dkd_alpha", float, 1.0, "DKD target-class weight", Bounds(0, 100)),
    Hyperparameter("dkd_beta", float, 8.0, "DKD non-target weight", Bounds(0, 100)),
    Hyperparameter("weight_decay", float, 0.01, "AdamW weight decay", UNIT),
    Hyperparameter("warmup_fraction", float, 0.05, "fraction of the steps spent warming the learning rate up", UNIT),
    Hyperparameter(
        "grad_clip",
        float,
        1.0,
        "largest gradient norm; larger gradients are scaled down to it",
        Bounds(0, 1e6, low_open=True),
        null_means="no gradient clipping",
    ),
    Hyperparameter(
        "augmentation",
        dict,
        None,
        "batch augmentation, per kind: "
        + "; ".join(f"{a.name} {a.bounds} ({a.inputs}): {a.help}" for a in AUGMENTATIONS),
        null_means="no augmentation",
    ),
    Hyperparameter(
        "compile", bool, False, "torch.compile the student (training continues uncompiled if compiling fails)"
    ),
    Hyperparameter(
        "recipe",
        str,
        "auto",
        "auto: augmentation fitting the data, a schedule long enough, temperature, alpha and learning rate chosen "
        "by a small search on the validation slice, and the no-teacher baseline trained on the same budget (a "
        "setting given a value other than its plain default is kept); plain: the values given and the plain "
        "defaults, exactly",
        choices=RECIPES,
    ),
)
HYPERPARAMETERS_BY_NAME = {p.name: p for p in HYPERPARAMETERS}
DEFAULTS: dict[str, Any] = {p.name: p.default for p in HYPERPARAMETERS}


def check_augmentation(value: Any) -> dict[str, float]:
    """An augmentation object with each amount as a float, or InvalidHyperparameters."""
    if not isinstance(value, Mapping):
        expected = HYPERPARAMETERS_BY_NAME["augmentation"].expectation()
        raise InvalidHyperparameters("augmentation", f"augmentation must be {expected}; got {_short(value)}")
    checked = {}
    for kind, amount in value.items():
        spec = _AUGMENTATION.get(kind) if isinstance(kind, str) else None
        if spec is None:
            raise InvalidHyperparameters(
                "augmentation", f"unknown augmentation {_short(kind)}; use one of {list(AUGMENTATION_KINDS)}"
            )
        number = as_number(amount)
        if number is None or not spec.bounds.contains(number):
            raise InvalidHyperparameters(
                "augmentation", f"augmentation {kind} must be a number in {spec.bounds}; got {_short(amount)}"
            )
        checked[kind] = number
    return checked


def validate_hyperparameters(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every hyperparameter of a job, checked, with defaults for the ones not given.

    Raises InvalidHyperparameters (a ValueError) on an unknown name or a value out of its type or bounds.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise InvalidHyperparameters(None, f"hyperparameters must be an object; got {_short(values)}")
    unknown = sorted(_short(k) if not isinstance(k, str) else k for k in values if k not in HYPERPARAMETERS_BY_NAME)
    if unknown:
        raise InvalidHyperparameters(
            None, f"unknown hyperparameter(s) {unknown[:10]}; known: {list(HYPERPARAMETERS_BY_NAME)}"
        )
    return {p.name: p.check(values[p.name]) if p.name in values else p.default for p in HYPERPARAMETERS}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
