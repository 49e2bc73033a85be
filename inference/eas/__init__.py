"""PAI-EAS's asynchronous queue service (API Edition): named services with an input and a sink
queue under `/api/predict/<service>`, spoken as the official `eas-prediction` SDK expects
(`/work/shared/reference/eas_queue.md`). `models.py` the rows, `queues.py` the queue services,
`bridge.py` input items → jobs → sink results, `views.py` the HTTP adapter."""
