"""Format and framing: the layout's names, the line codec, line framing and the one line classifier."""
