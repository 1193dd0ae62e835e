"""Pure domain core: spec and status models, phone normalisation, templating, references.

Nothing here does I/O, so every module can be imported from workflow code and unit-tested without a server.
"""
