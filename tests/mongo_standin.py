"""A small stand-in for a MongoDB server, for tests that need pymongo to
really connect (no MongoDB server can be installed here; DESIGN.md
section 9).

It listens on 127.0.0.1, one thread per connection, and speaks just enough
of the wire protocol for a pymongo client to find a standalone server and
run commands:

- OP_MSG (what pymongo 4 sends, handshake included) and, for older
  drivers, OP_QUERY on `admin.$cmd` answered with OP_REPLY;
- `hello` / `isMaster` / `ismaster`: a standalone, writable server that
  supports sessions; no `topologyVersion`, so pymongo's monitor polls
  instead of streaming;
- `ping`, `endSessions`, `buildInfo`, `getLastError`: `{ok: 1}`;
- any other command: a `CommandNotFound` error.

Replies are built with pymongo's own `bson`. Every connection is recorded:
who opened it (the `appName` of its handshake), the commands it sent, and
how it ended:

    "eof"           the client closed it cleanly, between two messages
    "partial"       the client closed it in the middle of a message
    "reset"         the connection was reset (RST)
    "error"         a malformed message or another socket error
    "server-closed" the stand-in closed it (on stop)

Used by tests/test_gevent.py; it can also run on its own for the
examples: `python tests/mongo_standin.py --port 27017`.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import bson
import bson.errors

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013

OP_MSG_CHECKSUM_PRESENT = 1 << 0
OP_MSG_MORE_TO_COME = 1 << 1

HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode
MAX_MESSAGE_SIZE = 48_000_000
MAX_WIRE_VERSION = 21  # MongoDB 7.0
HELLO_COMMANDS = {"hello", "ismaster", "isMaster"}
OK_COMMANDS = {"ping", "endSessions", "buildInfo", "buildinfo", "getLastError"}


class ProtocolError(Exception):
    """The client sent something this stand-in cannot read."""


@dataclass
class Connection:
    """What one client connection did."""

    number: int
    peer: tuple
    app_name: str | None = None
    commands: list = field(default_factory=list)
    closed: bool = False
    close_kind: str | None = None
    close_detail: str = ""

    def snapshot(self) -> "Connection":
        return Connection(self.number, self.peer, self.app_name, list(self.commands),
                          self.closed, self.close_kind, self.close_detail)


class MongoStandin:
    """A thread-based fake MongoDB server on 127.0.0.1.

        with MongoStandin() as server:
            client = pymongo.MongoClient(server.url)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._listener = socket.create_server((host, port), backlog=128)
        self._listener.settimeout(0.2)
        self.host, self.port = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._connections: list[Connection] = []
        self._sockets: dict[int, socket.socket] = {}
        self._numbers = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="mongo-standin-accept",
                                          daemon=True)

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> "MongoStandin":
        self._acceptor.start()
        return self

    def stop(self):
        """Stops accepting, closes every open connection, joins the threads."""
        self._stopping.set()
        self._acceptor.join(timeout=10)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets.values())
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(self._threads):
            thread.join(timeout=10)

    def __enter__(self) -> "MongoStandin":
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # --- what happened ----------------------------------------------------------

    def connections(self, app_name: str | None = None) -> list[Connection]:
        """Copies of the connection records, optionally of one appName."""
        with self._lock:
            return [
                c.snapshot() for c in self._connections
                if app_name is None or c.app_name == app_name
            ]

    def app_names(self) -> set:
        with self._lock:
            return {c.app_name for c in self._connections}

    # --- serving --------------------------------------------------------------------

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            record = Connection(next(self._numbers), peer)
            with self._lock:
                self._connections.append(record)
                self._sockets[record.number] = sock
            thread = threading.Thread(target=self._serve, args=(sock, record),
                                      name=f"mongo-standin-{record.number}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, record: Connection):
        kind, detail = "error", ""
        try:
            while True:
                header = self._read(sock, HEADER.size, at_boundary=True)
                if header is None:
                    kind = "eof"
                    break
                length, request_id, _, op_code = HEADER.unpack(header)
                if not HEADER.size < length <= MAX_MESSAGE_SIZE:
                    raise ProtocolError(f"message length {length}")
                body = self._read(sock, length - HEADER.size, at_boundary=False)
                reply = self._handle(record, request_id, op_code, body)
                if reply is not None:
                    sock.sendall(reply)
        except _Partial as error:
            kind, detail = "partial", str(error)
        except ConnectionResetError as error:
            kind, detail = "reset", str(error)
        except (OSError, ProtocolError, ValueError, bson.errors.BSONError) as error:
            kind, detail = "error", f"{type(error).__name__}: {error}"
        finally:
            if self._stopping.is_set() and kind != "eof":
                kind = "server-closed"
            with self._lock:
                record.closed = True
                record.close_kind = kind
                record.close_detail = detail
                self._sockets.pop(record.number, None)
            sock.close()

    @staticmethod
    def _read(sock: socket.socket, size: int, at_boundary: bool) -> bytes | None:
        """Reads exactly size bytes. An end of stream before the first byte
        of a message returns None; anywhere else it raises _Partial."""
        chunks, received = [], 0
        while received < size:
            chunk = sock.recv(size - received)
            if not chunk:
                if at_boundary and received == 0:
                    return None
                raise _Partial(f"end of stream after {received} of {size} bytes")
            chunks.append(chunk)
            received += len(chunk)
        return b"".join(chunks)

    def _handle(self, record: Connection, request_id: int, op_code: int,
                body: bytes) -> bytes | None:
        if op_code == OP_MSG:
            flags, command = self._parse_op_msg(body)
            reply = self._answer(record, command)
            if flags & OP_MSG_MORE_TO_COME:
                return None
            payload = struct.pack("<I", 0) + b"\x00" + bson.encode(reply)
            return self._message(request_id, OP_MSG, payload)
        if op_code == OP_QUERY:
            command = self._parse_op_query(body)
            reply = self._answer(record, command)
            payload = struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(reply)
            return self._message(request_id, OP_REPLY, payload)
        raise ProtocolError(f"unsupported opCode {op_code}")

    def _message(self, response_to: int, op_code: int, payload: bytes) -> bytes:
        header = HEADER.pack(HEADER.size + len(payload), next(self._request_ids),
                             response_to, op_code)
        return header + payload

    @staticmethod
    def _parse_op_msg(body: bytes) -> tuple:
        (flags,) = struct.unpack_from("<I", body, 0)
        end = len(body) - (4 if flags & OP_MSG_CHECKSUM_PRESENT else 0)
        position, command = 4, None
        while position < end:
            kind = body[position]
            position += 1
            (size,) = struct.unpack_from("<i", body, position)
            if kind == 0:
                command = bson.decode(body[position:position + size])
            elif kind == 1:
                # A document sequence (inserts and the like): read past it.
                pass
            else:
                raise ProtocolError(f"OP_MSG section kind {kind}")
            position += size
        if command is None:
            raise ProtocolError("OP_MSG without a body section")
        return flags, command

    @staticmethod
    def _parse_op_query(body: bytes) -> dict:
        collection_end = body.index(b"\x00", 4)
        collection = body[4:collection_end].decode()
        if not collection.endswith(".$cmd"):
            raise ProtocolError(f"OP_QUERY on {collection!r}: only commands are supported")
        position = collection_end + 1 + 8  # numberToSkip, numberToReturn
        (size,) = struct.unpack_from("<i", body, position)
        command = bson.decode(body[position:position + size])
        if "$query" in command:
            command = command["$query"]
        return command

    def _answer(self, record: Connection, command: dict) -> dict:
        name = next(iter(command), "")
        with self._lock:
            record.commands.append(name)
            if name in HELLO_COMMANDS and record.app_name is None:
                application = (command.get("client") or {}).get("application") or {}
                record.app_name = application.get("name")
        if name in HELLO_COMMANDS:
            reply = {
                "helloOk": True,
                "isWritablePrimary": True,
                "maxBsonObjectSize": 16 * 1024 * 1024,
                "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
                "maxWriteBatchSize": 100_000,
                "localTime": datetime.datetime.now(datetime.timezone.utc),
                "logicalSessionTimeoutMinutes": 30,
                "connectionId": record.number,
                "minWireVersion": 0,
                "maxWireVersion": MAX_WIRE_VERSION,
                "readOnly": False,
                "ok": 1.0,
            }
            if name != "hello":
                reply["ismaster"] = True
            return reply
        if name in OK_COMMANDS:
            return {"ok": 1.0}
        return {"ok": 0.0, "errmsg": f"no such command: '{name}'", "code": 59,
                "codeName": "CommandNotFound"}


class _Partial(Exception):
    """The stream ended in the middle of a message."""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=27017)
    options = parser.parse_args()
    with MongoStandin(port=options.port) as server:
        print(f"mongo stand-in listening on {server.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
