"""Errors that mean "this input can never succeed".

One type for it, so every edge treats it the same way: the CLI exits 2, the starter dead-letters and
acks the message, a workflow fails without retrying. Pydantic's own error is turned into a list of
(field, reason) problems so a user sees every bad field at once, in one readable block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    """One bad field: a dotted path (`entry.key`) and why it is wrong, without the value."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class InvalidInput(ValueError):
    """Input that breaks the contract; retrying it can never help."""

    def __init__(self, what: str, problems: Sequence[Problem]) -> None:
        self.what = what
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self.summary())

    def summary(self) -> str:
        """All problems on one line, for logs and message properties."""
        return f"invalid {self.what}: " + "; ".join(str(p) for p in self.problems)

    def report(self) -> str:
        """All problems, one per line, for a person at a terminal."""
        lines = [f"invalid {self.what}:"] + [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def _reason(error: ErrorDetails) -> str:
    message = error["msg"]
    # Our own validators raise ValueError; pydantic prefixes them with its class of error.
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def problems_of(error: ValidationError, where: str) -> list[Problem]:
    problems = []
    for detail in error.errors(include_url=False, include_input=False):
        path = ".".join([where, *(str(part) for part in detail["loc"])])
        problems.append(Problem(field=path, reason=_reason(detail)))
    return problems


def validated(model: type[M], data: Any, *, where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(where, problems_of(error, where)) from None


def validated_json(model: type[M], raw: str | bytes, *, where: str) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise InvalidInput(where, problems_of(error, where)) from None


class CommandFailed(RuntimeError):
    """A command could not do its job for a reason a person can fix, said in its message: the CLI prints
    it on one line and exits 1 (a setting nowhere given, a dev stack's taken port)."""
