"""OpenAI's Files and Batch API: files in the store (``files.py``), batch input lines checked (``lines.py``), batches
and their requests in the database (``store.py``), a durable runner in every router (``runner.py``) that sends each
request through the router's own app (``dispatch.py``) at batch priority."""
