"""What a service does with the events it consumes: one handler per event type.

A handler is registered with the type it handles, `@projections.on(TicketSubmitted)`, and
mypy checks that it accepts that type, so a handler cannot be paired with another type's
events; registration checks the annotation too, for code mypy does not see. Handlers get
the batch's `Transaction` (or a service's richer one): they write and emit, and the
consumer loop commits the batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, get_type_hints

from shared.db import Transaction
from shared.events import Event

T = TypeVar("T", bound=Transaction, contravariant=True)
E = TypeVar("E", bound=Event)

Projection = Callable[[T, E], Awaitable[None]]
"""`handler(tx, event)`: apply one event inside the batch's transaction."""


class Projections(Generic[T]):
    """The handlers of one service, by event type."""

    def __init__(self) -> None:
        self._handlers: dict[type[Event], Callable[[T, Any], Awaitable[None]]] = {}

    def on(self, event_type: type[E]) -> Callable[[Projection[T, E]], Projection[T, E]]:
        """Register the decorated function as the handler of `event_type`."""

        def register(handler: Projection[T, E]) -> Projection[T, E]:
            if event_type in self._handlers:
                raise ValueError(f"{event_type.__name__} already has a handler")
            _check_annotation(handler, event_type)
            self._handlers[event_type] = handler
            return handler

        return register

    def handler_for(self, event: Event) -> Callable[[T, Event], Awaitable[None]] | None:
        """The handler of the event's type, or None if this service ignores it."""
        return self._handlers.get(type(event))

    @property
    def event_types(self) -> frozenset[type[Event]]:
        """The event types handled."""
        return frozenset(self._handlers)


def _check_annotation(handler: Callable[..., Any], event_type: type[Event]) -> None:
    """TypeError unless the handler's event parameter accepts `event_type`."""
    parameters = list(inspect.signature(handler).parameters)
    if len(parameters) != 2:
        raise TypeError(f"{handler.__qualname__} must take (transaction, event)")
    annotation = get_type_hints(handler).get(parameters[1])
    if annotation is None:
        return
    if not (isinstance(annotation, type) and issubclass(event_type, annotation)):
        raise TypeError(
            f"{handler.__qualname__} takes {annotation!r}, not {event_type.__name__} events"
        )
