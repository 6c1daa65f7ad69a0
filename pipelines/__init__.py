"""The jobs users run: change, detect, uav, mission, triage, tasks, flight, demo.

Pipelines take settings dataclasses and values, call imagery/ and models/, and return values;
the CLI writes nothing a pipeline did not hand it. Long loops take a ``progress(done, total)``
callback instead of drawing bars.
"""
