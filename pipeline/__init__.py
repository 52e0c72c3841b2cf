"""jobrec pipeline tasks: raw → features → model → candidates → scores → store.

Each task is a plain function taking the run's ``ds`` (YYYY-MM-DD) and a :class:`pipeline.config.Settings`,
writing its outputs idempotently under the storage layout of :mod:`pipeline.storage`.
"""
