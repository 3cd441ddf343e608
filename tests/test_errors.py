"""The one formatter of pydantic validation errors, in its two styles."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bot.errors import validation_problems


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    size: int = 0

    @field_validator("size")
    @classmethod
    def _small(cls, size: int) -> int:
        if size > 9:
            raise ValueError("at most 9")
        return size


class Order(BaseModel):
    items: list[Item]


def error_of(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(data)
    return caught.value


def test_plain_style_keeps_pydantic_messages_and_list_indices() -> None:
    error = error_of({"items": [{"size": 10, "colour": "red"}, {}]})
    assert validation_problems(error, "order", unknown="unknown key") == [
        "items.0.name: Field required",
        "items.0.size: Value error, at most 9",
        "items.0.colour: unknown key",
        "items.1.name: Field required",
    ]
    assert validation_problems(error_of([]), "(top level)") == [
        "(top level): Input should be a valid dictionary or instance of Order"
    ]


def test_brief_style_is_for_people_sending_requests() -> None:
    error = error_of({"items": [{"size": 10, "colour": "red"}, {}]})
    messages = {("items.size", "value_error"): "too big"}
    assert validation_problems(error, "order", brief=True, messages=messages) == [
        "items.name: required",  # once, though two items lack it
        "items.size: too big",
        "items.colour: unknown field",
    ]
    one = error_of({"items": [{"name": "a", "size": 10}]})
    assert validation_problems(one, "order", brief=True) == ["items.size: at most 9"]
