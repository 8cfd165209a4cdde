"""The conformance kit behind :mod:`dispatchkit.testing` (see there): checks, targets, jobs."""
