"""The model zoo behind ``scripts/zoo``: architectures, honest weights, and the scoreboard
(not library code: nothing in the conversion imports it)."""
