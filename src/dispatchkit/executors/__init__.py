"""Where jobs run: the worker kinds behind a dispatcher."""

from .base import WorkerPool
from .thread import ThreadWorkerPool

__all__ = ["ThreadWorkerPool", "WorkerPool"]
