"""Other QueueClient calls against one queue: attributes, commit, delete, search, get.

Run with the SDK's python (tests/e2e/eas_sdk.py), config as one JSON argument:
  {"endpoint": ..., "service": ..., "token": ..., "queue": "sink" (or "" for the input queue),
   "calls": [["attributes"], ["commit", 3], ["search", 2], ["get", {"request_id": "...", "timeout": "2s"}]]}
Prints one JSON line per call: {"call": "attributes", "result": ...}, or
{"call": ..., "error": "PredictException", "code": 401, "message": "..."}.
"""

import base64
import json
import sys

from eas_prediction import QueueClient
from eas_prediction.exception import PredictException


def frame(x) -> dict:
    return {"index": x.index, "tags": dict(x.tags), "data_b64": base64.b64encode(x.data).decode(), "message": x.message}


def main() -> None:
    config = json.loads(sys.argv[1])
    name = f"{config['service']}/{config['queue']}" if config.get("queue") else config["service"]
    client = QueueClient(config["endpoint"], name)
    client.set_token(config["token"])
    client.init()
    for call, *args in config["calls"]:
        try:
            if call == "get":
                result = [frame(x) for x in client.get(**(args[0] if args else {}))]
            else:
                result = getattr(client, call)(*args)
                if isinstance(result, bytes):
                    result = result.decode("utf-8", "replace")
        except PredictException as exc:
            message = exc.message.decode("utf-8", "replace") if isinstance(exc.message, bytes) else str(exc.message)
            print(json.dumps({"call": call, "error": "PredictException", "code": exc.code, "message": message}), flush=True)
            continue
        print(json.dumps({"call": call, "result": result}), flush=True)


if __name__ == "__main__":
    main()
