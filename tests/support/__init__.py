"""Test support: TLS material, NATS credentials and pytest fixtures for real nats-server processes.

``tests/`` has no ``__init__.py``; pytest puts it on ``sys.path``, so import this as ``support``.
"""
