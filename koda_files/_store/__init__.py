"""The store's collaborators: the root and its handles, resume state, browsing, maintenance, index and summary."""
