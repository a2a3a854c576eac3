"""A small shop released twice by funcsight's change-intelligence tests.

``shop/logic.py`` is what a release changes (``releases/v1`` and ``releases/v2``); everything else
is the same in every release: the views, the stand-in database, and two modules whose behaviour
drifts over a run because of their own state (``ledger``, ``inventory``).
"""
