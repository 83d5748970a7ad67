"""Step 2 of the flow, admission: rate limits, concurrency and USD budgets (issue 17).

`charges.py` names what a request takes from each limit; `redis_store.py` checks and takes them all at once,
atomically, in one Redis round trip (one Lua script, Redis' own clock), and `local_store.py` does the same in
process for one replica. Both keep the same, exact semantics (see charges.py).
"""
