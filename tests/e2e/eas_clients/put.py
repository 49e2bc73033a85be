"""Put requests into an EAS input queue with the official SDK, as the seed document does.

Run with the SDK's python (tests/e2e/eas_sdk.py), config as one JSON argument:
  {"endpoint": "127.0.0.1:8000", "service": "sd_async", "token": "...", "route": "sdapi/v1/txt2img",
   "items": [{"body": "<the /sdapi/v1 JSON body, as text>", "tags": {"task_id": "job_001"}}]}
Prints one JSON line per item: {"index": "12", "request_id": "...", "tags": {...}}, or
{"error": "PredictException", "code": 401, "message": "..."} when the SDK raises.
"""

import json
import sys

from eas_prediction import QueueClient
from eas_prediction.exception import PredictException


def main() -> None:
    config = json.loads(sys.argv[1])
    route = config.get("route", "")
    queue_name = f"{config['service']}/{route}" if route else config["service"]
    input_queue = QueueClient(config["endpoint"], queue_name)
    input_queue.set_token(config["token"])
    input_queue.init()
    for item in config["items"]:
        tags = item.get("tags", {})
        try:
            index, request_id = input_queue.put(item["body"], tags=tags)
        except PredictException as exc:
            message = exc.message.decode("utf-8", "replace") if isinstance(exc.message, bytes) else str(exc.message)
            print(json.dumps({"error": "PredictException", "code": exc.code, "message": message, "tags": tags}), flush=True)
            continue
        print(json.dumps({"index": index, "request_id": request_id, "tags": tags}), flush=True)


if __name__ == "__main__":
    main()
