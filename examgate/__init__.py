"""The examgate program: its command line (``examgate …``), the operators' ``ctl`` and the worker process.

It sits above the HTTP edge (``gateway``) and the domain packages and wires them into processes;
nothing of the product imports it.
"""
