"""The web layer: the HTTP site, the request policy, REST, and the ``/ws/`` tree.

It maps domain failures to HTTP statuses in one table (:mod:`.errors`) and
parses and validates request bodies (:mod:`.bodies`) before the domain sees
them. The dashboard's files are in ``static/``.
"""
