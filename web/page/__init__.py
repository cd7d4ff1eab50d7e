"""The hub managers' status page and JSON API (``hubd.web.page``), built on ``hubd.web``."""
