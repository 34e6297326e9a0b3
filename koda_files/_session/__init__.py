"""The session directory: its handle, the parsed log, the context rule, completion, ids and the change journal."""
