"""The library of ready flows: one YAML template per flow in `winback/flows/templates/`.

A template is a flow definition with `${parameter}` placeholders and a list of the parameters it
takes (type, default, bounds). `render(name, **parameters)` fills them in and returns a validated
`FlowDefinition`. A placeholder that is a whole YAML value becomes the typed value (an integer, a
number); inside a longer string it becomes its text. Liquid (`{{ customer.first_name }}`) is left
alone: it is rendered at send time by the messaging layer.

The definition language has no arithmetic, so a few templates derive concrete values from their
parameters here (`DERIVED`): how long one replenished item lasts (quantity × days per unit) and
what comes off the end (shipping days + reminder lead), gaps between reminders given as "days
after the trigger", and the like.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from winback.flows import definition, files
from winback.kernel.errors import InvalidInput

PLACEHOLDER = re.compile(r"\$\{([a-z][a-z0-9_]*)\}")
WHOLE_PLACEHOLDER = re.compile(r"^\$\{([a-z][a-z0-9_]*)\}$")
TEMPLATE_DIRECTORY = "templates"

ParameterType = Literal["integer", "number", "string"]
Value = int | Decimal | str


@dataclass(frozen=True, slots=True)
class Parameter:
    """One value a template takes; `default` None and `required` True: the caller must give it."""

    name: str
    type: ParameterType
    description: str
    default: Value | None = None
    required: bool = False
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    suggested_segment: Mapping[str, Any] | None = None  # a segment rule that fits a `segment_id`


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    name: str
    title: str
    description: str
    parameters: tuple[Parameter, ...]


# --- the template files -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ParameterSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: ParameterType
    description: str = Field(min_length=1)
    default: int | float | str | None = None
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    suggested_segment: dict[str, Any] | None = None


class _TemplateFile(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9\-]*$")
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    parameters: list[_ParameterSpec] = Field(default_factory=list)
    flow: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Template:
    info: TemplateInfo
    flow: dict[str, Any]


@functools.cache
def _library() -> dict[str, _Template]:
    """Every template shipped in the package, by name (read once)."""
    found: dict[str, _Template] = {}
    directory = resources.files("winback.flows").joinpath(TEMPLATE_DIRECTORY)
    for entry in sorted(directory.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".yaml"):
            continue
        try:
            spec = _TemplateFile.model_validate(files.read_yaml(entry.read_text(encoding="utf-8")))
        except ValidationError as exc:
            raise RuntimeError(f"flow template {entry.name} is malformed: {exc}") from None
        if f"{spec.name}.yaml" != entry.name:
            raise RuntimeError(f"flow template {entry.name} calls itself {spec.name!r}")
        parameters = tuple(_parameter(item) for item in spec.parameters)
        info = TemplateInfo(spec.name, spec.title, " ".join(spec.description.split()), parameters)
        found[spec.name] = _Template(info, spec.flow)
    return found


def _parameter(spec: _ParameterSpec) -> Parameter:
    default = None if spec.default is None else _coerce(spec.name, spec.type, spec.default)
    return Parameter(
        name=spec.name,
        type=spec.type,
        description=" ".join(spec.description.split()),
        default=default,
        required=default is None,
        minimum=spec.minimum,
        maximum=spec.maximum,
        suggested_segment=spec.suggested_segment,
    )


# --- public -------------------------------------------------------------------------------------


def templates() -> list[TemplateInfo]:
    """Every ready flow, by name."""
    return [template.info for template in _library().values()]


def get(name: str) -> TemplateInfo:
    return _template(name).info


def render(name: str, **parameters: Any) -> definition.FlowDefinition:
    """The template `name` with its parameters filled in (defaults for those not given), validated.

    InvalidInput names an unknown template, an unknown or missing parameter, a value of the wrong
    kind or out of bounds, and any problem the resulting flow has."""
    template = _template(name)
    values = resolve_parameters(template.info, parameters)
    derive = DERIVED.get(name)
    if derive is not None:
        values = {**values, **derive(values)}
    data = _substitute(template.flow, values, name)
    try:
        return definition.parse_flow(data)
    except InvalidInput as exc:
        raise InvalidInput(
            f"template {name!r} with these parameters gives an invalid flow: {exc.message}",
            field=exc.details.get("field"),
            template=name,
            problems=exc.details.get("problems", []),
        ) from None


def resolve_parameters(info: TemplateInfo, given: Mapping[str, Any]) -> dict[str, Value]:
    """Given values (text from a command line is accepted) checked and completed with defaults."""
    known = {parameter.name: parameter for parameter in info.parameters}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidInput(
            f"template {info.name!r} takes no parameter {unknown[0]!r}; "
            f"it takes: {', '.join(known) or 'none'}",
            field=unknown[0],
            template=info.name,
        )
    values: dict[str, Value] = {}
    for parameter in info.parameters:
        raw = given.get(parameter.name)
        if raw is None:
            if parameter.default is None:
                raise InvalidInput(
                    f"template {info.name!r} needs the parameter {parameter.name!r}: {parameter.description}",
                    field=parameter.name,
                    template=info.name,
                )
            values[parameter.name] = parameter.default
            continue
        value = _coerce(parameter.name, parameter.type, raw)
        _check_bounds(info.name, parameter, value)
        values[parameter.name] = value
    return values


def replenishment_delay_days(
    quantity: int, days_per_unit: Decimal | int, shipping_days: int, reminder_lead_days: int = 0
) -> int:
    """Days from the order to the reminder: the supply lasts quantity × days per unit; the next one
    takes `shipping_days` to arrive, and the reminder comes `reminder_lead_days` before the last
    day to order. Rounded down: better a day early than a day without."""
    lasts = Decimal(quantity) * Decimal(days_per_unit)
    return math.floor(lasts) - shipping_days - reminder_lead_days


# --- values -------------------------------------------------------------------------------------


def _template(name: str) -> _Template:
    library = _library()
    try:
        return library[name]
    except KeyError:
        raise InvalidInput(
            f"no flow template {name!r}; known: {', '.join(library)}", field="template", template=name
        ) from None


def _coerce(name: str, kind: ParameterType, raw: Any) -> Value:
    if kind == "string":
        if not isinstance(raw, str) or not raw.strip():
            raise InvalidInput(f"parameter {name!r} needs some text", field=name)
        return raw
    if isinstance(raw, bool):
        raise InvalidInput(f"parameter {name!r} needs a number, not {raw!r}", field=name)
    try:
        number = Decimal(raw.strip()) if isinstance(raw, str) else Decimal(str(raw))
    except (InvalidOperation, TypeError):
        raise InvalidInput(f"parameter {name!r} needs a number, not {raw!r}", field=name) from None
    if not number.is_finite():
        raise InvalidInput(f"parameter {name!r} needs a finite number, not {raw!r}", field=name)
    if number == number.to_integral_value():
        return int(number)
    if kind == "integer":
        raise InvalidInput(f"parameter {name!r} needs a whole number, not {raw!r}", field=name)
    return number


def _check_bounds(template: str, parameter: Parameter, value: Value) -> None:
    if isinstance(value, str):
        return
    if parameter.minimum is not None and value < parameter.minimum:
        raise InvalidInput(
            f"template {template!r}: parameter {parameter.name!r} must be at least {parameter.minimum}, "
            f"not {value}",
            field=parameter.name,
            template=template,
        )
    if parameter.maximum is not None and value > parameter.maximum:
        raise InvalidInput(
            f"template {template!r}: parameter {parameter.name!r} must be at most {parameter.maximum}, "
            f"not {value}",
            field=parameter.name,
            template=template,
        )


def _substitute(data: Any, values: Mapping[str, Value], template: str) -> Any:
    if isinstance(data, dict):
        return {key: _substitute(item, values, template) for key, item in data.items()}
    if isinstance(data, list):
        return [_substitute(item, values, template) for item in data]
    if not isinstance(data, str):
        return data

    def lookup(name: str) -> Value:
        if name not in values:
            raise RuntimeError(f"flow template {template!r} uses ${{{name}}}, which it does not define")
        return values[name]

    whole = WHOLE_PLACEHOLDER.match(data)
    if whole:
        return lookup(whole.group(1))
    return PLACEHOLDER.sub(lambda match: str(lookup(match.group(1))), data)


# --- derived values (the language has no arithmetic) --------------------------------------------


def _as_int(value: Value) -> int:
    assert isinstance(value, int), value  # integer parameters are coerced to int
    return value


def _increasing_days(template: str, names: tuple[str, ...], values: Mapping[str, Value]) -> list[int]:
    """Gaps between "days after the trigger" given in order; each must come after the one before."""
    days = [_as_int(values[name]) for name in names]
    for index in range(1, len(days)):
        if days[index] <= days[index - 1]:
            raise InvalidInput(
                f"template {template!r}: {names[index]!r} ({days[index]}) must come after "
                f"{names[index - 1]!r} ({days[index - 1]})",
                field=names[index],
                template=template,
            )
    return [days[index] - days[index - 1] for index in range(1, len(days))]


def _browse(values: Mapping[str, Value]) -> dict[str, Value]:
    names = ("first_reminder_days", "second_reminder_days", "third_reminder_days")
    second_gap, third_gap = _increasing_days("browse-abandonment", names, values)
    return {"second_gap_days": second_gap, "third_gap_days": third_gap}


def _order_follow_up(values: Mapping[str, Value]) -> dict[str, Value]:
    names = ("cross_sell_after_days", "survey_after_days")
    [gap] = _increasing_days("order-follow-up", names, values)
    return {"survey_gap_days": gap}


def _promotion(values: Mapping[str, Value]) -> dict[str, Value]:
    # The last-day reminder goes out one day before the code expires.
    return {"last_day_after_days": _as_int(values["valid_days"]) - 1}


def _birthday(values: Mapping[str, Value]) -> dict[str, Value]:
    days_before, valid_days = _as_int(values["days_before"]), _as_int(values["valid_days"])
    if valid_days <= days_before:
        raise InvalidInput(
            f"template 'birthday': the code must still be valid on the birthday: 'valid_days' "
            f"({valid_days}) must be more than 'days_before' ({days_before})",
            field="valid_days",
            template="birthday",
        )
    return {"trigger_offset_days": -days_before}


def _replenishment(values: Mapping[str, Value]) -> dict[str, Value]:
    days_per_unit = values["days_per_unit"]
    assert not isinstance(days_per_unit, str)
    delay = replenishment_delay_days(
        _as_int(values["quantity"]),
        days_per_unit,
        _as_int(values["shipping_days"]),
        _as_int(values["reminder_lead_days"]),
    )
    if delay < 2:
        raise InvalidInput(
            f"template 'replenishment': quantity × days_per_unit − shipping_days − reminder_lead_days "
            f"is {delay} days; it must be at least 2",
            field="quantity",
            template="replenishment",
        )
    # The delay node multiplies by the quantity on the order: how long one item lasts, and what
    # comes off the end (the reorder's shipping, and the time to decide).
    days_per_item = Decimal(_as_int(values["quantity"])) * Decimal(days_per_unit)
    return {
        "days_per_item": days_per_item,
        "minus_days": _as_int(values["shipping_days"]) + _as_int(values["reminder_lead_days"]),
    }


DERIVED: dict[str, Callable[[Mapping[str, Value]], dict[str, Value]]] = {
    "browse-abandonment": _browse,
    "order-follow-up": _order_follow_up,
    "promotion": _promotion,
    "birthday": _birthday,
    "replenishment": _replenishment,
}
