"""Put→result latency through the official SDK: put one request, wait for its result on the sink.

Run with the SDK's python (tests/e2e/eas_sdk.py), config as one JSON argument:
  {"endpoint": ..., "service": ..., "token": ..., "route": "sdapi/v1/txt2img", "body": "<JSON text>",
   "runs": 5, "puts": 50, "threads": 1}
The sink watcher (watch(0, 5), commit each) is connected before the first put, in a thread, so
each figure is put → its result frame. Prints {"run": i, "seconds": s, "status": <parameters.status>}
per run, then, when `puts` > 0, times that many back-to-back puts from `threads` threads and
prints {"puts": n, "threads": t, "seconds": total} (their results are not awaited).
"""

import json
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from eas_prediction import QueueClient


def main() -> None:
    config = json.loads(sys.argv[1])
    input_queue = QueueClient(config["endpoint"], f"{config['service']}/{config['route']}")
    input_queue.set_token(config["token"])
    input_queue.init()
    sink_queue = QueueClient(config["endpoint"], f"{config['service']}/sink")
    sink_queue.set_token(config["token"])
    sink_queue.init()

    frames: queue.Queue = queue.Queue()

    def watch() -> None:
        for x in sink_queue.watch(0, 5, auto_commit=False).run():
            frames.put((time.perf_counter(), x))

    threading.Thread(target=watch, daemon=True).start()
    for run in range(config.get("runs", 5)):
        started = time.perf_counter()
        _, request_id = input_queue.put(config["body"], tags={"task_id": f"bench_{run}"})
        while True:
            arrived, x = frames.get(timeout=300)
            sink_queue.commit(x.index)
            if x.tags.get("requestId") == request_id:
                break
        status = json.loads(x.data)["parameters"]["status"]
        print(json.dumps({"run": run, "seconds": arrived - started, "status": status}), flush=True)

    count, threads = config.get("puts", 0), config.get("threads", 1)
    if count:
        def put(index: int) -> None:
            input_queue.put(config["body"], tags={"task_id": f"throughput_{index}"})

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:  # the SDK's connection pool is shared by the threads
            list(pool.map(put, range(count)))
        print(json.dumps({"puts": count, "threads": threads, "seconds": time.perf_counter() - started}), flush=True)


if __name__ == "__main__":
    main()
