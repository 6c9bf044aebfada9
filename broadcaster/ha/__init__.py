"""Active/standby on a shared PostgreSQL journal (DESIGN.md §9): the leader lease
(:mod:`broadcaster.ha.lease`), the fence every signature and RPC write passes
(:mod:`broadcaster.ha.fence`), and what a standby answers bots (:mod:`broadcaster.ha.standby`)."""
