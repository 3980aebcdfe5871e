"""Redis keys of SMS delivery (all start ``eg:sms:``); none is touched together with another by one script."""

from __future__ import annotations

SEND_SLOT = "eg:sms:send_slot"
"""STRING: the next free send slot of the shared rate, ms since the epoch (``pace.lua``); expires when idle."""

TOTALS = "eg:sms:totals"
"""HASH outcome → how many messages ended (or were retried) so, every worker together, since the key was made."""

RATES = "eg:sms:rates"
"""HASH worker id → ``"<sent per second>|<epoch s when measured>"``, each worker's recent send rate."""
