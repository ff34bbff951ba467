"""Workflows: notebooks chained into a pipeline kept in Git, run here or deployed to Step Functions.

``model`` is the in-memory form of a workflow file; ``loader`` reads and checks the YAML file.
"""
