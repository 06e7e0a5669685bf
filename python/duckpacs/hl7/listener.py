"""The HL7 v2 listener of ``duckpacs serve`` (``hl7.port``; 0 leaves it off): MLLP framing
(HL7 v2.5 Appendix C) by python-hl7's asyncio streams, on an event loop of its own thread.

Each message is answered before the next is read on its connection. Nothing a peer sends
stops the listener: a block that is not HL7 gets an AR with the reason, a block without the
MLLP start character or over the size limit closes that connection only (so does
``IDLE_SECONDS`` of silence), and an error while applying a message is answered AE and
logged.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from hl7.mllp import InvalidBlockError, start_hl7_server

from duckpacs import logs
from duckpacs.errors import DuckpacsError
from duckpacs.hl7 import messages
from duckpacs.worklist.store import Worklist

log = logs.get("hl7")

# A connection silent this long is closed (a RIS reconnects; a half-open socket is freed).
IDLE_SECONDS = 600.0
# Largest message accepted (an order or ADT is a few KB; reports with documents are not ours).
MAX_MESSAGE = 1 << 20


def _peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


class Hl7Listener:
    """Listens on (bind, port) until :meth:`stop`; :attr:`address` once started."""

    def __init__(self, worklist: Worklist, application: str, archive: Any = None) -> None:
        self.worklist = worklist
        self.archive = archive  # the server's: ADT A08/A40 correct archived studies too
        self.application = application
        self.address: tuple[str, int] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: Any = None

    def start(self, bind: str, port: int) -> tuple[str, int]:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(
                    start_hl7_server(
                        self._connection,
                        bind,
                        port,
                        limit=MAX_MESSAGE,
                        encoding="utf-8",
                        encoding_errors="replace",
                    )  # fmt: skip
                )
            except BaseException as e:  # noqa: BLE001 (handed to the starting thread)
                failure.append(e)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="hl7-listener", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        host, actual = self._server.sockets[0].getsockname()[:2]
        self.address = (host, int(actual))
        return self.address

    async def _connection(self, reader: Any, writer: Any) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:
                try:
                    block = await asyncio.wait_for(reader.readblock(), IDLE_SECONDS)
                except asyncio.IncompleteReadError:
                    return  # the peer closed
                except TimeoutError:
                    logs.event(log, "HL7 connection idle, closed", peer=peer)
                    return
                except (InvalidBlockError, ValueError) as e:
                    logs.event(log, "HL7 connection closed", reason=str(e), peer=peer)
                    return
                writer.writeblock(self.answer(block, peer).encode("utf-8"))
                await writer.drain()
        except ConnectionError as e:
            logs.event(log, "HL7 connection lost", reason=str(e), peer=peer)
        finally:
            writer.close()

    def answer(self, block: bytes, peer: Any = None) -> str:
        """The acknowledgement of one MLLP block."""
        try:
            msg = messages.parse(block.decode("utf-8", errors="replace"))
        except ValueError as e:
            logs.event(log, "HL7 rejected", reason=str(e), peer=peer)
            return messages.reject(str(e), self.application)
        kind, event = messages.message_type(msg)
        try:
            door = None
            if self.archive is not None:
                door = messages.ArchiveDoor(self.archive, f"hl7 {_peer_text(peer)}")
            outcome = messages.apply(self.worklist, msg, door)
        except DuckpacsError as e:  # a bad value or ID in the message: the sender's to fix
            outcome = messages.Outcome("AE", str(e))
        except Exception as e:  # noqa: BLE001 (answered AE; the listener goes on)
            log.exception("HL7 %s^%s failed", kind, event)
            outcome = messages.Outcome("AE", f"internal error: {e}")
        logs.event(log, f"HL7 {kind}^{event}", ack=outcome.code, text=outcome.text, peer=peer)
        return messages.acknowledge(msg, outcome, self.application)

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
