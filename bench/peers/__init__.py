"""The implementations the broadcaster is compared with, each run as its own process.

Every peer speaks the same line protocol with the driver (``bench.reaction``): it prints
``ready`` once subscribed, ``anchored`` on its first head, ``included`` whenever all the
transactions it sent are in canonical blocks; it reads ``send K`` (send K new transactions at
the next nonces) and ``quit`` on stdin. Nothing is printed on the reaction path.
"""
