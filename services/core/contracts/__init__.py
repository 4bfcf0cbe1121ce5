"""What crosses a process, defined once: the config schema, the wire shapes, the CRDs, typed errors.

Pure pydantic and the standard library (and yaml): the operator imports this without the audio or HTTP stacks.
"""
