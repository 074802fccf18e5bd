"""Read back an offline wandb run from its folder, with wandb's own record schema.

An offline run keeps everything it logged in one transaction log, `run-<id>.wandb`: a 7-byte header (`:W&B`, a
2-byte magic, a version byte), then LevelDB-log records in 32 KiB blocks (4-byte CRC, 2-byte length, 1-byte type:
full / first / middle / last), each payload a serialized `wandb_internal_pb2.Record`. wandb >= 0.19 ships no Python
reader for it (its reader lives in the Go service), so the tests decode the framing here and parse every record with
wandb's own protobuf classes: what they read is exactly what `wandb sync` would upload.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

_HEADER = 7
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError("not a wandb transaction log (no ':W&B' header)")
    position, pending = _HEADER, b""
    while position + 7 <= len(data):
        room = _BLOCK - position % _BLOCK
        if room < 7:  # a block's tail too short for a record header is padding
            position += room
            continue
        length, kind = struct.unpack_from("<HB", data, position + 4)
        if kind == 0 and length == 0:  # zero padding at the end of a block
            position += room
            continue
        chunk = data[position + 7: position + 7 + length]
        position += 7 + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        else:
            raise ValueError(f"unknown record type {kind} at byte {position}")


def read_offline_run(run_folder: str | Path) -> dict:
    """The run's name, config and history rows (each row: {metric: value}, `_step` included) as logged."""
    from wandb.proto import wandb_internal_pb2

    (log_file,) = Path(run_folder).glob("run-*.wandb")
    name, config, history = None, {}, []
    for payload in _payloads(log_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        which = record.WhichOneof("record_type")
        if which == "run":
            name = record.run.display_name
            config.update(_items(record.run.config.update))
        elif which == "config":
            config.update(_items(record.config.update))
        elif which == "history":
            history.append(_items(record.history.item))
        elif which == "request" and record.request.WhichOneof("request_type") == "partial_history":
            history.append(_items(record.request.partial_history.item))
    return {"name": name, "config": config, "history": history}


def _items(items) -> dict:
    """wandb stores each value as JSON under a key (or a nested key path joined with '/')."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}
