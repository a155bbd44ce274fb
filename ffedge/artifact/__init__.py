"""The artifact layer: what an exported file carries and how it is written.

Below both ``ffedge.export`` (which writes artifacts) and ``ffedge.runtimes`` (which reads
them): the metadata schema, reading/writing it per format, atomic writes, and the target
registry (records naming, by import path, each target's exporter and runner).
"""
