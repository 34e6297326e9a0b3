"""File operations and locking: the only code that changes the file system, and the file locks."""
