"""The PAI-EAS compatible asynchronous queue service (API Edition): services, queues, frames, watch."""
