"""The JSON convention shared by the producer and the consumer."""
import datetime
import json


def _default(value):
    # estela's convention: datetimes (and dates, times) as ISO 8601 strings, anything else as str().
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def encode(value):
    """bytes pass unchanged; anything else becomes UTF-8 JSON (datetimes as ISO strings, other objects as str())."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return json.dumps(value, default=_default, ensure_ascii=False).encode("utf-8")


def decode(payload):
    return json.loads(payload.decode("utf-8"))
