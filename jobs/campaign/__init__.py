"""The campaign scoring job's building blocks (config, inputs, Spark scoring, Delta lake, progress, session).

Only ``scoring`` is imported on Spark executors; it never imports ``lake`` (deltalake must not be
loaded in a process that Spark's Python daemon later forks).
"""
