"""A TCP relay between the targets and the coordinator that a test can cut:
while cut, it closes every relayed connection and every new one at once, so
each target sees the coordinator as unreachable (UNAVAILABLE), as during a
network partition; restored, it relays again."""

import socket
import threading


class Hop:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_off = False
        self.lock = threading.Lock()
        self.open = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.cut_off:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                _close(client)
                continue
            with self.lock:
                self.open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                _close(end)
                with self.lock:
                    self.open.discard(end)

    def cut(self):
        self.cut_off = True
        with self.lock:
            connections, self.open = list(self.open), set()
        for connection in connections:
            _close(connection)

    def restore(self):
        self.cut_off = False

    def close(self):
        self.cut()
        _close(self.listener)


def _close(connection):
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()
