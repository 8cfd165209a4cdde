"""How jobs reach workers on other machines.

Only :mod:`.base` (the :class:`Transport` protocol) is imported here: the Redis
transport (:mod:`.redis`) loads redis-py when it is used (``dispatchkit[redis]``),
so that the core stays free of it; :mod:`.memory` keeps everything in one
process, for tests without a server.
"""

from .base import Delivery, Peers, Transport

__all__ = ["Delivery", "Peers", "Transport"]
