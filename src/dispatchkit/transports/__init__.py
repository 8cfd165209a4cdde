"""How jobs reach workers on other machines.

Only :mod:`.base` is imported here: the Redis transport loads redis-py when it
is used (``dispatchkit[redis]``), so that the core stays free of it.
"""

from .base import Delivery, Transport

__all__ = ["Delivery", "Transport"]
