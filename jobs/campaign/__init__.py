"""The campaign scoring job's building blocks: config, inputs, Spark scoring, the Delta lake, progress, session.

Only ``scoring`` (and what it imports: ``lake_files``, ``inputs``, fer_core) runs on Spark executors;
none of it imports deltalake, which must not be loaded in a process that Spark's Python daemon later
forks. ``lake`` (the commit protocol), ``campaigns`` (the recompute) and ``admin`` (erase, maintain) run
on the driver.
"""
