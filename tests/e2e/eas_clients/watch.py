"""Watch an EAS sink queue with the official SDK, as the seed document's subscriber does.

Run with the SDK's python (tests/e2e/eas_sdk.py), config as one JSON argument:
  {"endpoint": "127.0.0.1:8000", "service": "sd_async", "token": "...", "window": 5,
   "auto_commit": false, "commit": true, "stop_after": 3, "attributes": true, "index": 0}
For each result it prints {"index": 7, "tags": {...}, "data": "<utf-8 text>", "message": ""}
(then {"committed": 7} when `commit` is set: `sink.commit(x.index)`); after `stop_after` results
it prints {"attributes": {...}} when asked and closes the watcher. Without `stop_after` it
watches until killed. A refused handshake prints {"error": "<exception class>", "detail": "..."}
and exits 3.
"""

import base64
import json
import sys

from eas_prediction import QueueClient


def main() -> None:
    config = json.loads(sys.argv[1])
    sink_queue = QueueClient(config["endpoint"], f"{config['service']}/sink")
    sink_queue.set_token(config["token"])
    sink_queue.init()

    watcher = sink_queue.watch(config.get("index", 0), config.get("window", 5),
                               index_only=config.get("index_only", False),
                               auto_commit=config.get("auto_commit", False))
    stop_after = config.get("stop_after")
    seen = 0
    try:
        for x in watcher.run():
            try:
                data = {"data": x.data.decode("utf-8")}
            except UnicodeDecodeError:
                data = {"data_b64": base64.b64encode(x.data).decode()}
            print(json.dumps({"index": x.index, "tags": dict(x.tags), **data, "message": x.message}), flush=True)
            if config.get("commit"):
                sink_queue.commit(x.index)
                print(json.dumps({"committed": x.index}), flush=True)
            seen += 1
            if stop_after is not None and seen >= stop_after:
                break
    except Exception as exc:  # noqa: BLE001 - the handshake is made on the first iteration of run()
        print(json.dumps({"error": type(exc).__name__, "detail": str(exc)}), flush=True)
        sys.exit(3)
    if config.get("attributes"):
        print(json.dumps({"attributes": sink_queue.attributes()}), flush=True)
    watcher.close()


if __name__ == "__main__":
    main()
