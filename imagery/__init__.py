"""Reading and georeferencing the world: rasters, vectors, telemetry, video, camera footprints.

Only modules in this package (and the ledger) open files. Everything here is free of typer/rich.
"""
