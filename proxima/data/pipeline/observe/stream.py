"""The events of a run as an async iterator: ``pipeline.events()``."""

from __future__ import annotations

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._model.events import EventKind, PipelineEvent

__all__ = ["EventStream"]


class EventStream:
    """The events of one run as an async iterator, from ``pipeline.events()``.

    The buffer is bounded and never blocks the scheduler: when it is full,
    the oldest buffered event is dropped to make room and ``dropped`` counts
    it. The run's final ``RUN_FINISHED`` event is therefore always delivered,
    and the iteration ends after it.
    """

    def __init__(self, max_buffer: int) -> None:
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(f"max_buffer must be an int >= 1, got {max_buffer!r}")
        self._send: MemoryObjectSendStream[PipelineEvent]
        self._receive: MemoryObjectReceiveStream[PipelineEvent]
        self._send, self._receive = anyio.create_memory_object_stream[PipelineEvent](max_buffer)
        self._ended = False
        #: Events lost because the consumer fell behind (oldest first).
        self.dropped: int = 0

    def __call__(self, event: PipelineEvent) -> None:
        """The listener side: buffer ``event`` without ever waiting."""
        if self._ended:
            return
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self._receive.receive_nowait()
            self.dropped += 1
            self._send.send_nowait(event)
        if event.kind is EventKind.RUN_FINISHED:
            self._ended = True
            self._send.close()

    def close(self) -> None:
        """End the iteration now and drop anything still buffered."""
        self._ended = True
        self._send.close()
        self._receive.close()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> PipelineEvent:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
