"""The measured cost of the sandbox per machine (opt-in): runc against runsc."""
