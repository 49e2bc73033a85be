"""Per-member Gradio workspace processes: started on demand, restarted, reaped, capped.

`manager.WorkspaceManager` is the one object that owns them (held by the ASGI application);
`process` starts and stops them; `records` mirrors their state into `WorkspaceSession` rows;
`paths` says where each member's workspace keeps its files.
"""
