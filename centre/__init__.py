"""The E-telligence centre (``hubd centre``): one service that receives every ward hub's
events over MQTT, stores each once, confirms it to its hub with a receipt, supervises
every hub and path, and lets operators act on alerts.

It talks to hubs only through the wire contract (``hubd.contract``) and serves its API and
page with the shared web plumbing (``hubd.web``); it imports nothing else of hubd.
"""
