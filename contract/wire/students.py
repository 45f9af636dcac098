"""StudentSpec: an uploaded model by id, or a built-in architecture with its size parameters.

The built-in variants are made from contract.students' table, one model per architecture, so that the OpenAPI
document lists every size parameter and a generated client gets one class per architecture.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SerializerFunctionWrapHandler,
    create_model,
    model_serializer,
    model_validator,
)

from contract import DEFAULT_STUDENT, STUDENT_ARCHITECTURES, check_student_parameters
from contract.student_search import DEFAULT_TRIALS, LATENCY_BATCHES, TARGET_DEVICES, check_student_search
from contract.students import DROPOUT, MAX_LIST_ITEMS, SIZE, SizeParameter, StudentArchitecture


class _StudentBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A parameter left out takes the engine's default: a job shows the spec as it was sent, not nulls.
        return {key: value for key, value in handler(self).items() if value is not None}


class UploadedStudent(_StudentBase):
    """An uploaded TorchScript or .pt2 module, by its model id."""

    model_id: str = Field(examples=["mdl_01a228b730fb32ae985110c4"])


class StudentSearch(BaseModel):
    """A budget: the engine sizes candidates of these architectures and keeps the most accurate that fits."""

    model_config = ConfigDict(extra="forbid")

    architectures: list[Literal[tuple(a.name for a in STUDENT_ARCHITECTURES)]] = Field(  # type: ignore[valid-type]
        min_length=1, description="architectures to size candidates of", examples=[["mlp", "cnn"]]
    )
    max_parameters: int | None = Field(None, ge=1, description="the student's largest parameter count")
    max_latency_ms: dict[Literal[LATENCY_BATCHES], float] | None = Field(  # type: ignore[valid-type]
        None, description="the student's largest latency per batch size, in milliseconds, on `device`"
    )
    trials: int = Field(DEFAULT_TRIALS, ge=3, le=40, description="candidates the search measures")
    device: Literal[TARGET_DEVICES] = Field(  # type: ignore[valid-type]
        "cpu", description="where latency is measured: the deployment target"
    )


class SearchedStudent(_StudentBase):
    """A student the engine chooses to fit a budget (issue 9): a multi-objective search over sizes."""

    search: StudentSearch


def _size_type(p: SizeParameter) -> Any:
    """The JSON type of one size parameter, with the bounds the contract checks."""
    size = Annotated[int, Field(ge=SIZE.low, le=SIZE.high)]
    if p.kind == "int":
        return size
    if p.kind == "int_list":
        return Annotated[list[size], Field(min_length=p.min_items, max_length=MAX_LIST_ITEMS)]
    if p.kind == "dropout":
        return Annotated[float, Field(ge=DROPOUT.low, lt=DROPOUT.high)]
    if p.kind == "bool":
        return bool
    return Literal[p.choices]


def _variant(arch: StudentArchitecture) -> type[BaseModel]:
    """The model of one built-in architecture: its name and each size parameter (null: the engine's default)."""
    fields: dict[str, Any] = {"architecture": (Literal[arch.name], ...)}
    for p in arch.parameters:
        described = f"{p.help} (default: {json.dumps(p.default)})"
        fields[p.name] = (_size_type(p) | None, Field(None, description=described))
    return create_model(
        f"{arch.name.capitalize()}Student",
        __base__=_StudentBase,
        __doc__=f"{arch.name} student for {arch.inputs}: {arch.help}.",
        **fields,
    )


STUDENT_VARIANTS: dict[str, type[BaseModel]] = {arch.name: _variant(arch) for arch in STUDENT_ARCHITECTURES}
# Union[...] of a tuple: the variants come from the table, so they cannot be spelled with `|` here.
if TYPE_CHECKING:  # a Union computed at import is dynamic to mypy (and to the pydantic plugin)
    BuiltInStudent = Any
else:
    BuiltInStudent = Annotated[
        Union[tuple(STUDENT_VARIANTS.values())],  # noqa: UP007
        Field(discriminator="architecture"),
    ]


class StudentSpec(RootModel[UploadedStudent | SearchedStudent | BuiltInStudent]):
    """A built-in architecture with its size parameters (discriminated by `architecture`), an uploaded model, or a
    search for the most accurate student that fits a budget."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"architecture": "mlp", "hidden_sizes": [32]}]})

    @model_validator(mode="before")
    @classmethod
    def _check(cls, value: Any) -> Any:
        # The contract's own check first: its messages name the allowed architectures and parameters, where the
        # union's would list every variant's failure.
        if not isinstance(value, dict):
            return value
        parameters = dict(value)
        if "search" in parameters:
            if len(parameters) > 1:
                raise ValueError("give search alone: the search chooses the architecture and its sizes")
            return {"search": check_student_search(parameters["search"])}
        model_id = parameters.pop("model_id", None)
        architecture = parameters.pop("architecture", None)
        if model_id is not None:
            if architecture is not None or parameters:
                raise ValueError("give either model_id or an architecture with its parameters, not both")
            return {"model_id": model_id}
        check_student_parameters(architecture, parameters)
        return {"architecture": architecture, **parameters}

    @property
    def architecture(self) -> str | None:
        """The built-in architecture's name; None for an uploaded student."""
        return getattr(self.root, "architecture", None)

    @property
    def search(self) -> dict | None:
        """The budget search's request; None for a named student."""
        search = getattr(self.root, "search", None)
        return None if search is None else search.model_dump()

    @property
    def model_id(self) -> str | None:
        """The uploaded student's model id; None for a built-in one."""
        return getattr(self.root, "model_id", None)


def default_student() -> StudentSpec:
    """The student a job gets when it names none."""
    return StudentSpec.model_validate(copy.deepcopy(DEFAULT_STUDENT))
