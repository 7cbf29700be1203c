"""kvcheck's harness: running a test (backends, clients, workloads, runner) and the CLI.

The ``kvcheck`` console script is :func:`kvcheck.harness.cli.main`.
"""
